"""Smoke test of benchmarks/quality.py on a tiny table and a tiny BERT (seconds, offline, CPU): rows x seeds run
through the library scripts, one shared pretraining, cached cells (a rerun trains nothing), the Markdown table
and its marked section in a results file."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return load_quality()


def tiny_suite(quality, table: str, encoder: str, output_dir: str):
    text = quality.TextModel(encoder, num_layers=1)
    rows = [
        quality.Row("DCNv2", "id", "dcnv2", seeds=(0, 1)),
        quality.Row("FLIP_ID-DCNv2", "id", pretraining="flip", seeds=(0, 1)),
        quality.Row("PLM-only", "text", text_model=text, seeds=(0,)),
    ]
    return quality.Suite(
        dataset=table,
        tokenizer_model=encoder,
        output_dir=output_dir,
        rows=rows,
        pretrainings={"flip": quality.Pretraining("flip", text, args=("--num_train_epochs", "1"))},
        finetune_config=str(CONFIGS / "finetune_tiny.yaml"),
        pretrain_config=str(CONFIGS / "pretrain_tiny.yaml"),
        max_length=64,
    )


def test_quality_suite_runs_caches_and_tabulates(quality, table, tiny_encoder_dir, tmp_path, monkeypatch):
    suite = tiny_suite(quality, table, tiny_encoder_dir, str(tmp_path / "quality"))
    assert quality.run_rows(suite) == []
    cells = quality.load_cells(suite)
    assert {name: len(records) for name, records in cells.items()} == {"DCNv2": 2, "FLIP_ID-DCNv2": 2, "PLM-only": 1}
    flip = cells["FLIP_ID-DCNv2"]
    assert {record["pretraining"]["checkpoint"] for record in flip} == {str(tmp_path / "quality/pretrain/flip")}
    assert all("--init_from" in record["argv"] for record in flip)
    text_config = json.loads((tmp_path / "quality/pretrain/flip/config.json").read_text())["text_config"]
    assert text_config["num_hidden_layers"] == 1  # the truncated encoder was pretrained
    for record in cells["DCNv2"]:  # the cached test probabilities reproduce the script's test AUC
        saved = np.load(quality.cell_path(suite, suite.row("DCNv2"), record["seed"], ".npz"))
        assert quality.rela_impr(record["test_auc"], record["test_auc"]) == 0
        from training.ctr_metrics import auc

        assert auc(saved["labels"], saved["probs"]) == pytest.approx(record["test_auc"], abs=1e-6)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(quality.finetune, "main", no_training)
    monkeypatch.setattr(quality.pretrain, "main", no_training)
    assert quality.run_rows(suite) == []

    table_md = quality.markdown_table(suite)
    lines = table_md.splitlines()
    assert len(lines) == 2 + 3 and "(base)" in lines[2] and "+0.00%" in lines[2]
    assert "1 seed" in lines[4]

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- quality:start -->\nold\n<!-- quality:end -->\n\n## Throughput\nkept\n")
    quality.replace_section(str(results), table_md)
    text = results.read_text()
    assert "old" not in text and "## Throughput\nkept" in text and lines[2] in text


def test_verdict_two_std_rule(quality):
    base = {"auc": (0.712, 0.002), "seeds": 3}
    assert quality.verdict({"auc": (0.715, 0.001), "seeds": 3}, base).startswith("tie")
    assert quality.verdict({"auc": (0.720, 0.001), "seeds": 3}, base).startswith("beats")
    assert quality.verdict({"auc": (0.700, 0.001), "seeds": 3}, base).startswith("below")
