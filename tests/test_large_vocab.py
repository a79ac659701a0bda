"""Large vocabularies (issue 8): a field with 10^6 distinct values, hashed into a fixed number of buckets
(`FieldSpec.num_buckets`, `num_buckets:` in a table schema file, `flip prepare --num_buckets FIELD=N`), fits,
encodes and trains an id-mode FlipForCTR with an embedding table bounded by the bucket count.

Memory: the default test measures the Python/numpy allocation peak of fit + encode with `tracemalloc`; the slow
test measures the peak RSS of the whole pipeline in a fresh interpreter (figures in RELIABILITY.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_flip import FlipForCTR
from processing import FieldSpec, TabularSchema
from processing.prepare import parse_buckets, prepare_dataset
from tests._data_fixtures import tiny_id_config

DISTINCT = 10**6
BUCKETS = 4096
ROOT = Path(__file__).resolve().parents[1]


def big_table(rows: int = DISTINCT) -> dict[str, list]:
    """`user`: `rows` distinct ids; `genre`: 5 values; `label`: 0/1."""
    index = np.arange(rows)
    return {
        "user": np.char.add("u", index.astype(str)).tolist(),
        "genre": np.array(["comedy", "drama", "war", "noir", "sci-fi"])[index % 5].tolist(),
        "label": (index % 3 == 0).astype(int).tolist(),
    }


def hashed_schema() -> TabularSchema:
    return TabularSchema([FieldSpec("user", num_buckets=BUCKETS), FieldSpec("genre")], label_column="label")


def train_steps(schema: TabularSchema, field_ids: np.ndarray, labels: np.ndarray, text_config, steps: int = 3):
    """`steps` AdamW steps of an id-mode FlipForCTR on random batches of 512 rows; returns (model, losses)."""
    torch.manual_seed(0)
    config = tiny_id_config(schema, text_config)
    model = FlipForCTR(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        rows = generator.integers(0, len(field_ids), 512)
        output = model(field_ids=torch.from_numpy(field_ids[rows]), labels=torch.from_numpy(labels[rows]).float())
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(output.loss.item())
    return model, losses


def test_million_value_field_trains_with_a_bucket_bounded_table(tiny_text_config, record_property):
    rows = big_table()
    schema = hashed_schema()
    tracemalloc.start()
    schema.fit(rows)
    field_ids = schema.encode(rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    record_property("fit_encode_peak_mib", round(peak / 2**20, 1))
    print(f"\n10^6-value field: fit + encode allocation peak {peak / 2**20:.1f} MiB (tracemalloc)")
    assert schema.field_vocab_sizes == [BUCKETS + 2, 5 + 2]
    assert field_ids.shape == (DISTINCT, 2) and field_ids[:, 0].min() >= 2 and field_ids[:, 0].max() < BUCKETS + 2
    assert sum(schema.fields[0].counts) == DISTINCT and len(schema.fields[0].counts) == BUCKETS
    assert len(np.unique(field_ids[:, 0])) > 0.99 * BUCKETS  # CRC32 spreads the ids over the buckets
    # no table of the 10^6 distinct strings survives or is built (a Counter alone would take ~100 MiB)
    assert peak < 160 * 2**20
    model, losses = train_steps(schema, field_ids, np.asarray(rows["label"]), tiny_text_config)
    embeddings = model.flip.tabular_model.embeddings.weight
    assert embeddings.shape[0] == sum(schema.field_vocab_sizes) == BUCKETS + 2 + 7  # not 10^6 + 9 rows
    assert all(np.isfinite(losses)) and embeddings.grad is None
    assert model.flip.text_model is None


def test_unseen_values_hash_like_training_values():
    """Hashing needs no vocabulary: a value never seen in train still gets a stable bucket (not OOV), the same in
    every process and after a save/load round trip of the schema."""
    schema = hashed_schema().fit(big_table(1000))
    fresh = TabularSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    unseen = {"user": ["u999999999", "", None], "genre": ["comedy", "western", None]}
    ids = schema.encode(unseen)
    assert (ids == fresh.encode(unseen)).all()
    assert ids[0, 0] >= 2 and ids[1:, 0].tolist() == [1, 1] and ids[:, 1].tolist()[1:] == [1, 1]


def test_prepare_num_buckets_override_and_cli_parsing(tmp_path, tiny_encoder_dir):
    import pandas as pd
    import yaml

    rows = 200
    pd.DataFrame({"user": [f"u{i}" for i in range(rows)], "label": [i % 2 for i in range(rows)]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    schema_file = tmp_path / "t.yaml"
    schema_file.write_text(yaml.safe_dump({"data_files": "t.csv", "fields": ["user"], "label_column": "label"}))
    stats = prepare_dataset(
        str(schema_file),
        tmp_path / "out",
        text_model=tiny_encoder_dir,
        max_length=16,
        num_buckets={"user": 32},
    )
    assert stats["field_vocab_sizes"] == {"user": 34}
    assert parse_buckets(["user=32", "item_id=100000"]) == {"user": 32, "item_id": 100000}
    for bad in (["user"], ["user=ten"], ["=5"]):
        with pytest.raises(ValueError, match="FIELD=N"):
            parse_buckets(bad)
    with pytest.raises(ValueError, match=r"unknown fields \['usr'\]; the fields are \['user'\]"):
        prepare_dataset(str(schema_file), tmp_path / "o2", text_model=tiny_encoder_dir, num_buckets={"usr": 8})


def test_finetune_num_buckets_argument(tmp_path, request):
    """`--num_buckets user_id=8` hashes the field when the script prepares the data (own prepared folder)."""
    from tests.test_training import CONFIGS
    from training import finetune

    data_args = request.getfixturevalue("common_args")  # tests/test_training.py: tiny table + tiny encoder
    argv = [str(CONFIGS / "finetune_tiny.yaml"), *data_args, "--ctr_mode", "id", "--max_steps", "2"]
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    finetune.main([*argv, "--output_dir", str(tmp_path), "--num_buckets", "user_id=8"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["field_names"][0] == "user_id" and config["field_vocab_sizes"][0] == 8 + 2
    prepared = Path(data_args[data_args.index("--data_dir") + 1])
    stats = [json.loads((folder / "prepare_stats.json").read_text()) for folder in prepared.iterdir()]
    assert [s for s in stats if s["preparation"]["options"]["num_buckets"] == {"user_id": 8}]  # its own folder


RSS_SCRIPT = """
import json, sys, numpy as np, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from transformers import BertConfig
from tests.test_large_vocab import big_table, hashed_schema, train_steps
from processing import FieldSpec, TabularSchema

def mib(key):  # VmRSS: resident now; VmHWM: peak so far
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return round(int(status[key].split()[0]) / 1024, 1)

mode = sys.argv[1]
record = {{"mode": mode, "after_imports": mib("VmRSS")}}
table = big_table()
record["after_table"] = mib("VmRSS")
schema = hashed_schema() if mode == "hashed" else TabularSchema([FieldSpec("user"), FieldSpec("genre")])
schema.fit(table)
ids = schema.encode(table)
record["after_fit_encode"] = mib("VmRSS")
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
train_steps(schema, ids, np.asarray(table["label"]), config)
record.update(after_train=mib("VmRSS"), peak=mib("VmHWM"), vocab_sizes=schema.field_vocab_sizes)
print(json.dumps(record))
"""


@pytest.mark.slow  # two fresh interpreters on 10^6 rows (~1 min on a busy 2-core CPU)
def test_peak_rss_hashed_vs_full_vocabulary(record_property):
    """Peak RSS after each stage; with hashing the training stage adds ~nothing, with a full vocabulary the
    10^6-row embedding table (+ AdamW moments) adds ~100 MiB at embedding_dim 8 and the vocabulary dict more."""
    results = {}
    for mode in ("hashed", "full"):
        output = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT.format(root=str(ROOT)), mode],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )
        results[mode] = json.loads(output.stdout.strip().splitlines()[-1])
        record_property(f"rss_{mode}", results[mode])
        print(results[mode])
    hashed, full = results["hashed"], results["full"]
    assert hashed["vocab_sizes"] == [BUCKETS + 2, 7] and full["vocab_sizes"] == [DISTINCT + 2, 7]
    assert hashed["after_train"] - hashed["after_table"] < full["after_train"] - full["after_table"] - 100
