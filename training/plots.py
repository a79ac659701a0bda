"""PNG figures of a CTR evaluation (matplotlib, Agg backend: no display needed).

- `roc_<split>.png`: ROC curve with its AUC;
- `calibration_<split>.png`: reliability curve (observed click rate per bin of predicted probability) and the
  histogram of predictions;
- `training_curves.png`: training loss and its components, validation AUC (a joint model: of the mix and of each
  tower) / LogLoss, the joint `alpha`, from a `trainer_state.json` log history.

`flip finetune` writes them for the test split into its output folder (the model card embeds them) and
`flip evaluate` next to its metrics file. `draw_roc` / `draw_calibration` draw one model on a given axis, so
several models share a figure (benchmarks/plots.py).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from processing.atomic_io import atomic_file

from .ctr_metrics import sigmoid

TRAINING_CURVES_NAME = "training_curves.png"
# panel title -> log keys drawn in it (only the keys present are drawn; a panel without any is left out)
CURVE_PANELS = {
    "training loss": ("loss", "id_loss", "text_loss", "joint_loss", "icl_loss", "mlm_loss", "mtm_loss"),
    "validation loss": ("eval_loss", "eval_id_loss", "eval_text_loss", "eval_joint_loss"),
    "validation AUC": ("eval_auc", "eval_id_auc", "eval_text_auc"),  # a joint model: the mix and each tower
    "validation LogLoss": ("eval_logloss",),
    "joint alpha": ("alpha", "eval_alpha"),
}


def draw_roc(ax, labels: Sequence[float], probs: Sequence[float], name: str = "model") -> float:
    """ROC curve of one model on `ax` (legend shows the AUC); returns the AUC."""
    fpr, tpr, _ = roc_curve(labels, probs)
    auc = roc_auc_score(labels, probs)
    ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    return auc


def draw_calibration(ax, labels: Sequence[float], probs: Sequence[float], name: str = "model", n_bins: int = 10):
    """Reliability curve of one model on `ax` (quantile bins: each holds ~N/n_bins rows)."""
    observed, predicted = calibration_curve(labels, probs, n_bins=n_bins, strategy="quantile")
    ax.plot(predicted, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="mean predicted click probability", ylabel="observed click rate")


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str | os.PathLike:
    """Grid and legend (where there are labels) on every axis with data, tight layout, save to `path` atomically (a
    reader never sees a half-written PNG), close the figure."""
    for ax in fig.axes:
        if not ax.axison:
            continue
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp_path:
        fig.savefig(tmp_path, dpi=dpi)
    plt.close(fig)
    return path


def plot_roc(labels, probs, path: str, title: str = "ROC") -> str:
    """One-model ROC figure at `path`."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    draw_roc(ax, labels, probs)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_calibration(labels, probs, path: str, title: str = "calibration", n_bins: int = 10) -> str:
    """Reliability curve (left) and histogram of the predicted probabilities (right) at `path`."""
    fig, (curve_ax, hist_ax) = plt.subplots(1, 2, figsize=(9, 4))
    draw_calibration(curve_ax, labels, probs, n_bins=n_bins)
    curve_ax.set_title(f"{title} ({n_bins} quantile bins)", fontsize=10)
    hist_ax.hist(np.asarray(probs, dtype=float), bins=30, color="C1")
    hist_ax.set(xlabel="predicted click probability", ylabel="rows", title="predictions")
    hist_ax.tick_params(axis="x", labelrotation=30)
    return save_figure(fig, path)


def plot_training_curves(log_history: list[dict], path: str) -> str | None:
    """One panel per `CURVE_PANELS` entry found in `log_history` (x = step); None when nothing is logged."""
    panels = {
        title: [key for key in keys if any(key in entry for entry in log_history)]
        for title, keys in CURVE_PANELS.items()
    }
    panels = {title: keys for title, keys in panels.items() if keys}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels.items()):
        for key in keys:
            points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
            ax.plot(*zip(*points), marker=".", label=key)
        ax.set(title=title, xlabel="step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)


def latest_log_history(folder: str) -> list[dict]:
    """`log_history` of `folder/trainer_state.json`, else of its last `checkpoint-*/trainer_state.json`, else []."""
    states = sorted(glob.glob(os.path.join(folder, "checkpoint-*", "trainer_state.json")), key=_step_of)
    candidates = [os.path.join(folder, "trainer_state.json"), *reversed(states)]
    for path in candidates:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle).get("log_history", [])
    return []


def _step_of(path: str) -> int:
    name = os.path.basename(os.path.dirname(path))
    return int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else -1


def write_evaluation_plots(
    folder: str, labels, probs, split: str = "test", log_history: list[dict] | None = None, prefix: str = ""
) -> list[str]:
    """ROC and calibration of `split` into `folder` (`<prefix>roc_<split>.png`, `<prefix>calibration_<split>.png`),
    plus the training curves of `log_history` (None: the `trainer_state.json` found in `folder`, unless
    `training_curves.png` is already there); returns the written paths. The ROC and calibration need both classes
    in `labels`."""
    os.makedirs(folder, exist_ok=True)
    labels, probs = np.asarray(labels, dtype=float).reshape(-1), np.asarray(probs, dtype=float).reshape(-1)
    written = []
    if len(np.unique(labels)) == 2:
        roc_path = os.path.join(folder, f"{prefix}roc_{split}.png")
        written.append(plot_roc(labels, probs, roc_path, f"ROC, {split} split"))
        calibration_path = os.path.join(folder, f"{prefix}calibration_{split}.png")
        written.append(plot_calibration(labels, probs, calibration_path, f"calibration, {split} split"))
    curves_path = os.path.join(folder, TRAINING_CURVES_NAME)
    if log_history is None:
        log_history = [] if os.path.isfile(curves_path) else latest_log_history(folder)
    curves = plot_training_curves(log_history, curves_path) if log_history else None
    return written + ([curves] if curves else [])


class PredictionRecorder:
    """`compute_metrics` wrapper that keeps the labels and click probabilities of its last call, so the plots of
    an evaluation need no second pass (`trainer.compute_metrics = recorder` before `trainer.evaluate`)."""

    def __init__(self, compute_metrics: Callable):
        self.compute_metrics = compute_metrics
        self.labels: np.ndarray | None = None
        self.probs: np.ndarray | None = None

    def __call__(self, eval_pred) -> dict[str, float]:
        logits = (
            eval_pred.predictions[0] if isinstance(eval_pred.predictions, (tuple, list)) else eval_pred.predictions
        )
        self.labels = np.asarray(eval_pred.label_ids).reshape(-1)
        self.probs = sigmoid(np.asarray(logits).reshape(-1))
        return self.compute_metrics(eval_pred)
