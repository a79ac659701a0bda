"""Evaluation figures: valid PNGs from `training.plots`, written by `flip finetune` (embedded in the model card,
with TensorBoard logging, validation AUC/LogLoss and joint alpha in the log history) and by `flip evaluate`."""

import glob
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests import test_training
from training import evaluate, plots
from training.arguments import FlipTrainingArguments

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    image = plt.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_evaluation_plots_are_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.5 * labels + 0.5 * rng.random(300), 0, 1)
    history = [{"step": s, "loss": 1 / s, "alpha": 0.1 * s} for s in range(1, 6)]
    history += [{"step": 5, "eval_auc": 0.7, "eval_logloss": 0.6, "eval_loss": 0.6}]
    written = plots.write_evaluation_plots(str(tmp_path), labels, probs, "validation", log_history=history)
    names = ["roc_validation.png", "calibration_validation.png", plots.TRAINING_CURVES_NAME]
    assert [Path(path).name for path in written] == names
    for path in written:
        assert_valid_png(path)
    assert plots.plot_training_curves([{"step": 1, "learning_rate": 0.1}], str(tmp_path / "none.png")) is None


def test_a_failed_save_leaves_the_previous_figure_whole(tmp_path, monkeypatch):
    path = tmp_path / "roc.png"
    path.write_bytes(b"the previous figure")
    fig, _ = plt.subplots()

    def crash(self, target, *args, **kwargs):
        Path(target).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(type(fig), "savefig", crash)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, str(path))
    assert path.read_bytes() == b"the previous figure" and [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_finetune_logs_to_tensorboard_and_writes_embedded_plots(table, common_args, tmp_path):
    budget = ["--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps"]
    budget += ["--save_steps", "2", "--report_to", "tensorboard", "--ctr_mode", "joint", "--embedding_dim", "4"]
    results = test_training.run_finetune(tmp_path / "run", common_args, *budget)
    run = tmp_path / "run"
    history = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert {"loss", "alpha", "id_loss", "text_loss"} <= set().union(*history)
    assert {"eval_auc", "eval_logloss", "eval_alpha"} <= set().union(*history)
    assert glob.glob(str(run / "**" / "events.out.tfevents*"), recursive=True)
    for name in ("roc_test.png", "calibration_test.png", plots.TRAINING_CURVES_NAME):
        assert_valid_png(run / name)
        assert f"]({name})" in (run / "README.md").read_text()
    predictions = np.load(run / "predictions_test.npz")  # the test pass's probabilities, in row order
    assert len(predictions["probs"]) == results["test_rows"] and predictions["labels"].dtype == np.uint8
    assert roc_auc_score(predictions["labels"], predictions["probs"]) == pytest.approx(results["test"]["test_auc"])
    eval_dir = tmp_path / "eval"
    record = evaluate.main([str(run), "--dataset", table, "--output_file", str(eval_dir / "metrics.json")])
    assert record["test_auc"] == pytest.approx(results["test"]["test_auc"], abs=1e-6)
    assert_valid_png(eval_dir / "eval_roc_test.png")
    assert_valid_png(eval_dir / "eval_calibration_test.png")
    card_plots = {name: (run / name).read_bytes() for name in ("roc_test.png", "calibration_test.png")}
    evaluate.main([str(run), "--dataset", table, "--max_samples", "20"])  # issue 15 item 4: into the model folder
    assert {name: (run / name).read_bytes() for name in card_plots} == card_plots  # the card's plots stay
    assert_valid_png(run / "eval_roc_test.png")


def test_tensorboard_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr("training.arguments.find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"flip-ctr\[tensorboard\]"):
        FlipTrainingArguments(output_dir="unused", report_to="tensorboard", use_cpu=True)
