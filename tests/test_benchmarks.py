"""Smoke test of benchmarks/throughput.py, bench_data.py and gpu_quality.py on a tiny table and a tiny random BERT
(seconds, offline, CPU): every section's function runs, the Markdown section is written and replaced, the bundle
round-trips, the no-sklearn AUC matches scikit-learn."""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from processing import FlipProcessor, PromptTemplate
from processing.text_models import resolve_text_model
from tests._data_fixtures import ml_rows, ml_schema

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import allocators  # noqa: E402
import bench_data  # noqa: E402
import gpu_quality  # noqa: E402
import throughput  # noqa: E402


@pytest.fixture(scope="module")
def data() -> bench_data.BenchData:
    """64 ML-100k-like rows encoded by the FlipProcessor with the MiniLM tokenizer."""
    rows = ml_rows(64)
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    processor = FlipProcessor(tokenizer, ml_schema(rows), PromptTemplate(), max_length=100)
    encoded = processor(rows)
    columns = {key: encoded[key] for key in ("input_ids", "token_field_index", "field_ids", "labels")}
    split = bench_data._rows_from_columns(columns)
    return bench_data.BenchData(processor, {"train": split, "validation": split, "test": split}, "unused")


@pytest.fixture()
def setup(data, tmp_path, monkeypatch) -> throughput.Setup:
    monkeypatch.setattr(throughput, "CACHE", tmp_path)
    return throughput.Setup(
        device=torch.device("cpu"),
        dtype=None,
        data=data,
        text_model_path=throughput.text_model_path("bert-tiny-random", data),
        flip_kwargs=throughput.flip_kwargs(data),
        feature_counts=data.processor.schema.feature_counts(),
    )


def tiny_args(**overrides) -> argparse.Namespace:
    args = throughput.build_parser().parse_args(
        [
            "--batch_size",
            "4",
            "--steps",
            "1",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--serving_id_batch_size",
            "8",
            "--serving_text_batch_size",
            "4",
        ]
    )
    return argparse.Namespace(**{**vars(args), **overrides})


def test_pretraining_levers_and_report(setup, tmp_path):
    results = throughput.bench_pretraining(setup, tiny_args())
    assert set(results) >= {
        "plain MLM, padded",
        "FLIP",
        "FLIP + length-grouped batches",
        "FLIP - masked-only logits (full logits)",
        "FLIP - SDPA (eager attention)",
    }
    assert all(r["wall"]["median"] > 0 and r["cpu"]["median"] > 0 for r in results.values())

    full = {
        "meta": {
            "device": "cpu",
            "dtype": "fp32",
            "text_model": "tiny",
            "batch_size": 4,
            "steps": 1,
            "repeats": 2,
            "warmup": 1,
            "date": "today",
            "hardware": throughput.hardware(setup.device),
            "load_before": "0",
            "load_after": "0",
            "command": "cmd",
        },
        "lengths": throughput.length_distribution(setup.data),
        "pretrain": results,
    }
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Quality\n\nkept\n")
    throughput.replace_section(path, throughput.markdown(full), "cpu-tiny")
    throughput.replace_section(path, throughput.markdown(full), "cpu-tiny")  # replaced, not appended
    text = path.read_text()
    assert text.count("## Throughput") == 1 and text.count("| FLIP |") == 1 and "kept" in text


def test_padded_plain_batches_and_length_grouping(setup):
    variant = throughput.Variant(plain_mlm=True)
    indices = throughput.batch_indices(setup.data, 4, 2, grouped=False, seed=0)
    batch = throughput.collate_pretraining(setup, variant, indices, pad_length=100)[0]
    assert batch["input_ids"].shape == (4, 100) and (batch["labels"] != -100).any()
    grouped = throughput.batch_indices(setup.data, 4, 16, grouped=True, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(64))


def test_serving_and_memory_probe(setup):
    serving = throughput.bench_serving(setup, tiny_args())
    assert serving["id"]["FLIP_ID"]["wall"]["median"] > 0
    assert serving["text"]["FLIP joint"]["vs_separate_cpu"]["median"] > 0
    flip = throughput.FlipForCTR(throughput.FlipConfig(**setup.flip_kwargs, ctr_mode="id")).eval()
    field_ids = torch.tensor([row["field_ids"] for row in setup.data.splits["train"][:8]])
    torch.testing.assert_close(throughput.bare_copy(flip).eval()(field_ids), flip(field_ids=field_ids).logits)
    memory = throughput.cpu_peak_subprocess(setup, throughput.Variant(), tiny_args())
    assert memory["peak_mib"] > 0


def test_bundle_round_trip_and_quality_runner(data, setup, tmp_path):
    data.text_model_path = setup.text_model_path
    folder = bench_data.write_bundle(data, tmp_path / "bundle")
    loaded = bench_data.load_bundle(folder, splits=("train", "test"))
    assert loaded.splits["train"] == data.splits["train"]
    assert loaded.processor.schema.field_vocab_sizes == data.processor.schema.field_vocab_sizes
    records = gpu_quality.main(
        [
            "--bundle",
            str(folder),
            "--output_dir",
            str(tmp_path / "q"),
            "--max_rows",
            "32",
            "--max_steps",
            "2",
            "--batch_size",
            "8",
            "--seeds",
            "0,1",
        ]
    )
    id_rows, text_rows = records[1:5], records[5:]
    assert [r["row"] for r in records[:5]] == ["FLIP pretraining", "FLIP_ID", "DCNv2", "FLIP_ID", "DCNv2"]
    assert [(r["row"], r["seed"]) for r in text_rows] == [("FLIP (joint)", 0), ("FLIP_PLM", 0)]
    assert [r["seed"] for r in id_rows] == [0, 0, 1, 1]
    # the smoke bundle's test split is its train split: 2 steps already rank it (0.98; ~0.5 at learning rate 0)
    assert all(r["test_auc"] > 0.9 for r in id_rows)
    assert all(0.0 <= r["test_auc"] <= 1.0 for r in text_rows)
    assert 0.0 < abs(text_rows[0]["alpha"]) < 0.01  # the learned mix moved from its init (0) by ~2 steps x 5e-5


def test_speed_ratios_are_taken_round_by_round():
    rates = {"FLIP": {"wall": [10.0, 20.0, 30.0]}, "plain": {"wall": [5.0, 5.0, 30.0]}}
    ratios = throughput.compare(rates, {"flip": "FLIP"})["plain"]["vs_flip_wall"]
    assert ratios == {"median": 0.5, "min": 0.25, "max": 1.0}  # rounds 5/10, 5/20, 30/30; not 40/60


def test_allocator_children_run_the_flip_step_and_ratios_are_per_round(data, setup, tmp_path, monkeypatch):
    """A real child process (glibc) measures the FLIP step from a bundle; a library that is not on the machine is
    named as missing, not measured; each allocator's ratio is to the same round's glibc child."""
    data.text_model_path = setup.text_model_path
    bundle = bench_data.write_bundle(data, tmp_path / "bundle")
    missing = allocators.Allocator("absent", "libnot-an-allocator.so.9", {"MALLOC_CONF": "x"})
    monkeypatch.setattr(allocators, "ALLOCATORS", (allocators.GLIBC, missing))
    output = tmp_path / "RESULTS.md"
    flags = ["--bundle", str(bundle), "--text_model", setup.text_model_path, "--batch_size", "4", "--steps", "1"]
    results = allocators.main(["--rounds", "1", "--repeats", "1", "--warmup", "1", "--output", str(output), *flags])
    assert list(results) == [allocators.GLIBC.name] and results[allocators.GLIBC.name]["cpu"]["median"] > 0
    text = output.read_text()
    assert "Not found here: libnot-an-allocator.so.9" in text and "| glibc malloc (default) |" in text

    env = missing.environment("/lib/x.so")
    assert env["LD_PRELOAD"] == "/lib/x.so" and env["MALLOC_CONF"] == "x" and env["OMP_NUM_THREADS"] == "1"
    assert allocators.GLIBC.environment(None).get("LD_PRELOAD") == os.environ.get("LD_PRELOAD")  # nothing added

    fast = allocators.Allocator("fast", "libfast.so")
    per_round = {
        ("glibc", 0): (10.0, 5.0),
        ("fast", 0): (20.0, 10.0),
        ("glibc", 1): (40.0, 20.0),
        ("fast", 1): (40.0, 20.0),
    }
    calls = []

    def fake_child(allocator, library_path, throughput_args):
        key = ("glibc" if allocator is allocators.GLIBC else "fast", len(calls) // 2)
        calls.append((allocator.name, library_path))
        wall, cpu = per_round[key]
        return {"wall": wall, "cpu": cpu}

    monkeypatch.setattr(allocators, "child_rates", fake_child)
    ratios = allocators.measure([(allocators.GLIBC, None), (fast, "/lib/libfast.so")], 2, [])["fast"]
    assert ratios["vs_glibc_cpu"] == {"median": 1.5, "min": 1.0, "max": 2.0}  # rounds 10/5, 20/20; not 30/25
    assert calls[2:] == [("fast", "/lib/libfast.so"), (allocators.GLIBC.name, None)]  # round 2 starts elsewhere


def test_rank_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # with ties
    assert gpu_quality.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_trainer_groups_by_length_from_arrow_lengths(tmp_path):
    """FlipTrainer's group_by_length sampler: lengths read column-wise, same batches as the Trainer's own."""
    from datasets import Dataset
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from training.arguments import FlipPretrainingArguments
    from training.trainer import FlipTrainer

    rng = np.random.default_rng(0)
    dataset = Dataset.from_dict({"input_ids": [[1] * int(n) for n in rng.integers(5, 60, 300)]})
    dataset = dataset.select(range(0, 300, 2))  # an indices mapping: lengths must follow it
    args = FlipPretrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
    )
    trainer = FlipTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=dataset)
    sampler = trainer._get_train_sampler()
    assert sampler.lengths == [len(row["input_ids"]) for row in dataset]
    reference = LengthGroupedSampler(8, dataset=dataset)
    torch.manual_seed(0)
    ours = list(sampler)
    torch.manual_seed(0)
    assert ours == list(reference)
