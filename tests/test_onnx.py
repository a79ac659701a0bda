"""Serving FLIP_ID with ONNX Runtime (issue 16): `flip export-onnx` writes a graph whose scores equal PyTorch's (DCNv2,
DeepFM, AutoInt, a hashed-bucket field), the serving wrapper rejects malformed batches, `flip predict --runtime onnx`
streams like the PyTorch path, the folder serves with numpy + onnxruntime alone, and a `flip push`ed checkpoint and
ONNX folder load by Hub repo id under HF_HUB_OFFLINE=1 from a cache laid out by huggingface_hub itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from huggingface_hub import scan_cache_dir, snapshot_download

from modeling_flip import FlipConfig, FlipForCTR
from processing.onnx_serving import SCHEMA_NAME, ORTFlipForCTR
from processing.schema import FieldSpec, TabularSchema
from tests import test_pipeline
from tests._data_fixtures import ML_DISPLAY, ML_FIELDS, ml_rows
from tests._hub_fixtures import fake_hub
from tests.test_modeling_flip import FlipModelTester
from tests.test_pipeline import reference_probs, rows_frame
from training import cli, predict
from training.export import INFO_NAME, load_exported_id, score_exported
from training.onnx_export import check_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serving_onnx

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture: tiny saved FlipForCTR + FlipProcessor folders
BACKBONES = ("dcnv2", "deepfm", "autoint")
BUCKETS = 16


def hashed_schema() -> TabularSchema:
    """The ML-like schema with `user_id` hashed into `BUCKETS` buckets (no vocabulary), fitted on 64 rows."""
    fields = [
        FieldSpec(name, display, num_buckets=BUCKETS if name == "user_id" else None)
        for name, display in zip(ML_FIELDS, ML_DISPLAY)
    ]
    return TabularSchema(fields).fit(ml_rows(64))


def save_id_model(path: Path, backbone: str, text_config) -> str:
    """A tiny id-mode FlipForCTR (`backbone`) for `hashed_schema()`, weights drawn wide enough that rows score
    differently, saved with its flip_schema.json (what `flip finetune --ctr_mode id` leaves, minus the tokenizer)."""
    schema = hashed_schema()
    kwargs = FlipModelTester(text_config).config_kwargs(
        field_names=schema.field_names, field_vocab_sizes=schema.field_vocab_sizes, ctr_mode="id", backbone=backbone
    )
    model = FlipForCTR(FlipConfig(text_config=text_config.to_dict(), **kwargs))
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.data = 0.5 * torch.randn(param.shape, generator=generator)
    model.save_pretrained(path)
    schema.save(str(path / SCHEMA_NAME))
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_text_config) -> dict[str, tuple[str, str]]:
    """backbone -> (PyTorch FLIP_ID folder, its `flip export-onnx` folder)."""
    root = tmp_path_factory.mktemp("onnx")
    folders = {}
    for backbone in BACKBONES:
        source = save_id_model(root / backbone, backbone, tiny_text_config)
        assert cli.main(["export-onnx", source, str(root / f"{backbone}-onnx")]) == 0
        folders[backbone] = (source, str(root / f"{backbone}-onnx"))
    return folders


def torch_logits(source: str, field_ids: np.ndarray) -> np.ndarray:
    """The PyTorch FLIP_ID logits (N,) of local ids (N, F)."""
    model, _ = load_exported_id(source)
    with torch.no_grad():
        return model(field_ids=torch.from_numpy(field_ids)).logits.numpy()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_onnx_scores_equal_pytorch(exports, backbone):
    source, folder = exports[backbone]
    frame = rows_frame(40)
    ort_model = ORTFlipForCTR.from_pretrained(folder, threads=1)
    field_ids = ort_model.encode(frame)
    expected = torch_logits(source, field_ids)
    assert expected.std() > 0.1  # rows score differently: equal scores are not a constant
    np.testing.assert_allclose(ort_model(field_ids), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ort_model(field_ids[:1]), expected[:1], atol=1e-5, rtol=0)  # dynamic batch axis
    probabilities = ort_model.predict(frame, batch_size=7)
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-expected)), atol=1e-5, rtol=0)
    assert ort_model.predict(frame.iloc[3].to_dict()) == pytest.approx(probabilities[3:4], abs=1e-7)  # one row
    info = json.loads(Path(folder, INFO_NAME).read_text())
    assert info["format"] == "onnx" and info["parity_max_abs_diff"] <= 1e-5
    assert ort_model.config["backbone"] == backbone
    files = set(os.listdir(folder))
    assert {"model.onnx", "config.json", SCHEMA_NAME, "onnx_serving.py", "tabular_schema.py", "README.md"} <= files
    assert not [name for name in files if name.endswith((".safetensors", ".bin")) or name.startswith("tokenizer")]


def test_hashed_bucket_field_scores_equal_pytorch(exports):
    source, folder = exports["dcnv2"]
    frame = rows_frame(40).assign(user_id=[f"new-user-{i}" for i in range(40)])  # never seen: hashed, not OOV
    ort_model = ORTFlipForCTR.from_pretrained(folder, threads=1)
    user_ids = ort_model.encode(frame)[:, 0]
    assert user_ids.min() >= 2 and user_ids.max() < BUCKETS + 2 and len(set(user_ids)) > 5
    np.testing.assert_allclose(ort_model.predict(frame), score_exported(*load_exported_id(source), frame), atol=1e-5)
    other_users = frame.assign(user_id=[f"other-user-{i}" for i in range(40)])
    assert np.abs(ort_model.predict(other_users) - ort_model.predict(frame)).max() > 1e-3  # the bucket matters


def test_wrong_number_of_fields_is_rejected(exports):
    ort_model = ORTFlipForCTR.from_pretrained(exports["dcnv2"][1], threads=1)
    field_ids = ort_model.encode(rows_frame(3))
    with pytest.raises(ValueError, match=r"shape \(batch, 8\).*got shape \(3, 7\)"):
        ort_model(field_ids[:, :7])
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        ort_model(field_ids[0])
    with pytest.raises(TypeError, match="integer ids"):
        ort_model(field_ids.astype(np.float32))


def test_out_of_range_ids_are_rejected(exports):
    ort_model = ORTFlipForCTR.from_pretrained(exports["dcnv2"][1], threads=1)
    field_ids = ort_model.encode(rows_frame(3))
    too_big = field_ids.copy()
    too_big[2, 1] = ort_model.schema.field_vocab_sizes[1]  # gender (male/female): 4 ids, 0..3
    # the graph alone does not notice: the id reads the next field's first row of the shared table
    assert np.isfinite(ort_model.session.run(None, {"field_ids": too_big})[0]).all()
    with pytest.raises(ValueError, match=r"row 2, field 'gender' has id 4, valid ids are 0\.\.3"):
        ort_model(too_big)
    negative = field_ids.copy()
    negative[0, 0] = -1
    with pytest.raises(ValueError, match="row 0, field 'user_id' has id -1"):
        ort_model(negative)


def test_export_check_refuses_a_graph_that_differs(exports):
    dcnv2_source, dcnv2_folder = exports["dcnv2"]
    assert check_parity(FlipForCTR.from_pretrained(dcnv2_source).eval(), Path(dcnv2_folder), atol=1e-5) <= 1e-5
    with pytest.raises(RuntimeError, match="export aborted"):  # the DeepFM model against the DCNv2 graph
        check_parity(FlipForCTR.from_pretrained(exports["deepfm"][0]).eval(), Path(dcnv2_folder), atol=1e-5)


def test_predict_runtime_onnx_streams_like_pytorch(exports, tmp_path):
    source, folder = exports["autoint"]
    rows = tmp_path / "rows.csv"
    rows_frame(23).to_csv(rows, index=False)
    onnx_out, torch_out = tmp_path / "onnx.parquet", tmp_path / "torch.parquet"
    options = ["--chunk_size", "10", "--batch_size", "4"]
    assert cli.main(["predict", folder, str(rows), "--runtime", "onnx", "--output_file", str(onnx_out), *options]) == 0
    assert cli.main(["predict", source, str(rows), "--output_file", str(torch_out), *options]) == 0
    scored = pd.read_parquet(onnx_out)
    assert list(scored.columns) == [*rows_frame(1).columns, "ctr"] and len(scored) == 23
    np.testing.assert_allclose(scored["ctr"], pd.read_parquet(torch_out)["ctr"], atol=1e-5, rtol=0)
    rows_frame(23).drop(columns=["genre"]).to_csv(rows, index=False)
    with pytest.raises(ValueError, match=r"missing the schema columns \['genre'\]"):
        predict.main([folder, str(rows), "--runtime", "onnx", "--output_file", str(onnx_out)])
    pd.testing.assert_frame_equal(pd.read_parquet(onnx_out), scored)  # the failed run left the old output alone


def test_onnx_serving_errors_name_the_fix(exports, tmp_path, monkeypatch):
    source, folder = exports["dcnv2"]
    with pytest.raises(FileNotFoundError, match="flip export-onnx"):
        ORTFlipForCTR.from_pretrained(source)
    rows_frame(2).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(SystemExit):
        cli.main(["predict", folder, str(tmp_path / "rows.csv"), "--runtime", "onnx", "--processor", source])
    ort_model = ORTFlipForCTR.from_pretrained(folder)
    with pytest.raises(ValueError, match="different lengths"):
        ort_model.encode({**rows_frame(2).to_dict("list"), "genre": ["Comedy"]})
    with pytest.raises(ValueError, match=r"fields \['genre'\] hold a single value"):
        ort_model.encode({**rows_frame(2).to_dict("list"), "genre": "Comedy"})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"flip-ctr\[onnx\]"):
        ORTFlipForCTR.from_pretrained(folder)


def test_serving_benchmark_compares_the_same_scores(exports):
    source, folder = exports["dcnv2"]
    models = serving_onnx.Models.load(source, folder, threads=1)
    batches = serving_onnx.column_batches(rows_frame(10).to_dict("list"), batch_size=4, count=3)  # wraps around
    assert [len(batch["user_id"]) for batch in batches] == [4, 4, 4]
    assert batches[2]["user_id"][2] == batches[0]["user_id"][0]
    runs = serving_onnx.contenders(models, batches)
    with torch.inference_mode():
        model_only = [np.asarray(runs[name](1), dtype=np.float64) for name in serving_onnx.MODEL_ONLY]
        end_to_end = [np.asarray(runs[name](1), dtype=np.float64) for name in serving_onnx.END_TO_END]
    for logits in model_only[1:]:
        np.testing.assert_allclose(model_only[0], logits, atol=1e-5, rtol=0)  # ORT, FLIP_ID eager, bare DCNv2
    np.testing.assert_allclose(end_to_end[0], end_to_end[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(end_to_end[0], 1 / (1 + np.exp(-model_only[0])), atol=1e-5, rtol=0)
    times = serving_onnx.time_calls(runs, num_batches=3, rounds=2)
    stats = {4: {name: serving_onnx.latency_stats(t, 4) for name, t in times.items()}}
    assert all(row["calls"] == 6 and row["p99_ms"] >= row["p50_ms"] > 0 for row in stats[4].values())
    results = {"batches": stats, "parity_max_abs_diff": 0.0, "load_before": "0", "load_after": "0"}
    meta = dict.fromkeys(("threads", "date", "hardware", "onnxruntime", "command", "model"), "x")
    text = serving_onnx.markdown(results, meta)
    assert text.count("| 4 |") == 5 and "| 4 | FLIP_ID, PyTorch eager |" in text and "| 1.00x |" in text


# Runs in a fresh interpreter where torch, transformers, huggingface_hub and this repository cannot be imported: the
# exported folder alone (onnx_serving.py + tabular_schema.py) scores raw rows with numpy + onnxruntime.
SERVE_FROM_FOLDER = """
import importlib.abc, json, sys

BLOCKED = {"torch", "transformers", "huggingface_hub", "modeling_flip", "processing", "training"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
folder, rows_file = sys.argv[1:]
sys.path.insert(0, folder)
from onnx_serving import ORTFlipForCTR

print(json.dumps(ORTFlipForCTR.from_pretrained(folder, threads=1).predict(json.load(open(rows_file))).tolist()))
"""


def test_exported_folder_serves_with_numpy_and_onnxruntime_alone(exports, tmp_path):
    source, folder = exports["deepfm"]
    frame = rows_frame(6).assign(user_id=[f"u{i}" for i in range(6)])
    (tmp_path / "rows.json").write_text(json.dumps(frame.to_dict("list")))
    command = [sys.executable, "-c", SERVE_FROM_FOLDER, folder, str(tmp_path / "rows.json")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, env={}, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = score_exported(*load_exported_id(source), frame).numpy()
    np.testing.assert_allclose(json.loads(result.stdout), expected, atol=1e-5, rtol=0)


# Runs in a fresh interpreter, HF_HUB_OFFLINE=1, Hub cache in HF_HOME, no endpoint reachable. The model and
# processor load first with this repository blocked (code files from the Hub cache), then the pipeline, the ONNX
# wrapper and `flip predict` (PyTorch and ONNX Runtime) load by repo id.
LOAD_BY_REPO_ID = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_flip", "processing", "training"}:
            raise ImportError(f"{name} is blocked in this test")

block = Block()
sys.meta_path.insert(0, block)
import torch
from transformers import AutoModelForSequenceClassification, AutoProcessor

repo, onnx_repo, rows_file, scored_prefix = sys.argv[1:]
rows = json.load(open(rows_file))
model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
batch = processor(rows, return_tensors="pt")
with torch.no_grad():
    logits = model(field_ids=batch["field_ids"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
out = {"model": logits.logits.sigmoid().tolist(), "classes": [type(model).__module__, type(processor).__module__]}
sys.meta_path.remove(block)

from processing.onnx_serving import ORTFlipForCTR
from training import cli
from training.pipeline import load_ctr_pipeline

out["pipeline"] = load_ctr_pipeline(repo, device="cpu")(rows)
out["onnx"] = ORTFlipForCTR.from_pretrained(onnx_repo, threads=1).predict(rows).tolist()
csv_file = rows_file.replace(".json", ".csv")
for model_id, runtime in ((onnx_repo, "onnx"), (repo, "torch")):
    output = f"{scored_prefix}-{runtime}.csv"
    assert cli.main(["predict", model_id, csv_file, "--runtime", runtime, "--output_file", output]) == 0, runtime
print(json.dumps(out))
"""


def test_pushed_checkpoint_and_onnx_folder_load_by_repo_id_offline(tiny_ctr_dirs, exports, tmp_path):
    hub_cache = tmp_path / "hf_home" / "hub"
    with fake_hub() as hub:
        for folder, repo in ((tiny_ctr_dirs["joint"], "me/flip-tiny"), (exports["dcnv2"][1], "me/flip-tiny-onnx")):
            assert cli.main(["push", folder, repo, "--token", "hf_fake"]) == 0
            snapshot_download(repo, cache_dir=hub_cache)
    assert "model.safetensors" in hub.repos["me/flip-tiny"] and "model.onnx" in hub.repos["me/flip-tiny-onnx"]
    assert {repo.repo_id for repo in scan_cache_dir(hub_cache).repos} == {"me/flip-tiny", "me/flip-tiny-onnx"}
    frame = rows_frame(5)
    (tmp_path / "rows.json").write_text(json.dumps(frame.to_dict("list")))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    env = {"HF_HOME": str(hub_cache.parent), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "PATH": ""}
    paths = [str(tmp_path / "rows.json"), str(tmp_path / "scored")]
    command = [sys.executable, "-c", LOAD_BY_REPO_ID, "me/flip-tiny", "me/flip-tiny-onnx", *paths]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in out["classes"])  # remote code, from the cache
    expected = reference_probs(tiny_ctr_dirs["joint"], frame).numpy()
    np.testing.assert_allclose(out["model"], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["pipeline"], expected, atol=1e-6, rtol=0)
    expected_onnx = ORTFlipForCTR.from_pretrained(exports["dcnv2"][1], threads=1).predict(frame)
    np.testing.assert_allclose(out["onnx"], expected_onnx, atol=1e-7, rtol=0)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "scored-onnx.csv")["ctr"], expected_onnx, atol=1e-6, rtol=0)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "scored-torch.csv")["ctr"], expected, atol=1e-6, rtol=0)
