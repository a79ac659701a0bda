"""Figures of the quality benchmark, from the cached cells and pretraining checkpoints of benchmarks/quality.py:

    python benchmarks/plots.py [--output_dir outputs/quality] [--figures benchmarks]

- `quality_auc.png`: test AUC per model, mean with a +-1 std error bar and every seed as a dot;
- `quality_pretraining_losses.png`: ICL, MLM and MTM training losses of each pretraining (trainer_state.json);
- `quality_roc_calibration.png`: ROC and calibration (reliability) curves of FLIP_ID vs DCNv2 on the test split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

from training.plots import draw_calibration, draw_roc

LOSSES = ("icl_loss", "mlm_loss", "mtm_loss")
ROC_ROWS = ("DCNv2", "FLIP_ID-DCNv2")


def draw_auc_panel(ax, cells: dict[str, list[dict]], title: str) -> None:
    """Mean +- std (error bar) and the individual seeds of the test AUC of `cells` on `ax`."""
    names = list(cells)
    for i, name in enumerate(names):
        aucs = np.array([record["test_auc"] for record in cells[name]])
        std = aucs.std(ddof=1) if len(aucs) > 1 else 0.0
        ax.errorbar(i, aucs.mean(), yerr=std, fmt="o", color="C0", capsize=6, markersize=8)
        ax.scatter(np.full(len(aucs), i + 0.15), aucs, s=14, color="C1", zorder=3)
        label = f"{aucs.mean():.4f}\n(n={len(aucs)})"
        ax.annotate(label, (i, aucs.mean()), xytext=(14, -4), textcoords="offset points", fontsize=8)
    if "DCNv2" in cells:
        ax.axhline(np.mean([r["test_auc"] for r in cells["DCNv2"]]), color="grey", ls="--", lw=1, label="DCNv2 mean")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.2)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_auc(suite: quality.Suite, path: Path) -> None:
    """Test AUC per finished row: on top the ID-tower rows (baselines and FLIP_ID) with several seeds, zoomed;
    below every row (text, joint and 1-seed rows too)."""
    cells = {  # full-test-split metrics, as in the quality table
        name: [{**record, **quality.full_test_metrics(suite, record)} for record in records]
        for name, records in quality.load_cells(suite).items()
    }
    zoomed = {name: records for name, records in cells.items() if len(records) > 1 and suite.row(name).mode == "id"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(16, 12))
    draw_auc_panel(top, zoomed, "ID-tower rows (baselines, FLIP_ID) with >= 3 seeds (zoomed)")
    draw_auc_panel(bottom, cells, "all rows (1-seed rows: no error bar, not a claim)")
    for ax in (top, bottom):
        ax.set_ylabel("test AUC")
    fig.suptitle("movielens-100k test AUC on the 10,000 test rows (mean ± std over seeds; dots = seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def pretraining_history(checkpoint_dir: Path) -> tuple[list[dict], int]:
    """(training log entries, train batch size) of the last saved checkpoint's trainer_state.json ([] when none)."""
    states = sorted(checkpoint_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    if not states:
        return [], 0
    state = json.loads(states[-1].read_text())
    return [entry for entry in state["log_history"] if "loss" in entry], state["train_batch_size"]


def plot_pretraining_losses(suite: quality.Suite, path: Path) -> bool:
    """One panel per loss (ICL, MLM, MTM), one line per finished pretraining; False when there is none."""
    histories = {key: pretraining_history(Path(suite.output_dir, "pretrain", key)) for key in suite.pretrainings}
    histories = {key: history for key, history in histories.items() if history[0]}
    if not histories:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    batch_size = max(size for _, size in histories.values())
    axes[0].axhline(math.log(batch_size), color="grey", ls="--", lw=1, label=f"chance = ln {batch_size}")
    for ax, loss in zip(axes, LOSSES):
        for key, (history, _) in histories.items():
            points = [(entry["step"], entry[loss]) for entry in history if loss in entry]
            if points:
                ax.plot(*zip(*points), marker=".", label=key)
        ax.set_title(loss.replace("_", " ").upper().replace(" LOSS", " loss"), fontsize=10)
        ax.set_xlabel("step (64 rows)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss (logging window mean)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(
        "FLIP pretraining losses on a CPU budget (2-layer MiniLM + DCNv2 unless named: _deepfm, _minilm6)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def plot_roc_calibration(suite: quality.Suite, path: Path, seed: int = 0) -> bool:
    """ROC and reliability curves of `ROC_ROWS` on test (one seed); False when a row has no cached scores."""
    scores = {}
    for name in ROC_ROWS:
        npz = Path(quality.cell_path(suite, suite.row(name), seed, ".npz"))
        if not npz.is_file():
            return False
        scores[name] = np.load(npz)
    fig, (roc_ax, cal_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, data in scores.items():
        draw_roc(roc_ax, data["labels"], data["probs"], name)
        draw_calibration(cal_ax, data["labels"], data["probs"], name)
    roc_ax.set_title(f"ROC, test split, seed {seed}")
    cal_ax.set_title("calibration (10 quantile bins), test split")
    for ax in (roc_ax, cal_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/quality", help="quality.py output folder")
    parser.add_argument("--figures", default="benchmarks", help="where the PNGs go")
    args = parser.parse_args(argv)
    suite = quality.default_suite(args.output_dir)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    written = [figures / "quality_auc.png"]
    plot_auc(suite, written[0])
    if plot_pretraining_losses(suite, figures / "quality_pretraining_losses.png"):
        written.append(figures / "quality_pretraining_losses.png")
    if plot_roc_calibration(suite, figures / "quality_roc_calibration.png"):
        written.append(figures / "quality_roc_calibration.png")
    print("\n".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
