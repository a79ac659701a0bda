"""Figures of the quality benchmark, from the records (and the cached test scores) of benchmarks/quality.py:

    python benchmarks/plots.py [--output_dir outputs/quality] [--records_dir benchmarks/quality_records] \\
        [--figures benchmarks]

- `quality_auc.png`: test AUC per model (its grid point chosen on validation), mean with a +-1 std error bar and
  every seed as a dot;
- `quality_pretraining_curve.png`: FLIP_ID test AUC against the pretraining epoch it starts from, with the DCNv2
  band (mean +- 2 std: PROTOCOL.md's tie zone);
- `quality_pretraining_losses.png`: per pretraining, the ICL / MLM / MTM training and validation losses, the
  gradient norm each loss sends into the tabular tower and the ID-embedding norm (its logged history);
- `quality_roc_calibration.png`: ROC and calibration (reliability) curves of FLIP_ID vs DCNv2 on the test split;
- `quality_label_efficiency.png`: test AUC against the fraction of the train labels, one line per model family,
  with +-1 std error bars (`views.label_efficiency`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
import views

from training.plots import draw_calibration, draw_roc, save_figure

LOSSES = ("icl", "mlm", "mtm")
CURVE_PRETRAINING = "ref10"


def draw_auc_panel(ax, cells: dict[str, list[dict]], title: str) -> None:
    """Mean +- std (error bar) and the individual seeds of the test AUC of `cells` on `ax`."""
    names = list(cells)
    for i, name in enumerate(names):
        aucs = np.array([record["test_auc"] for record in cells[name]])
        ax.errorbar(i, aucs.mean(), yerr=quality.seed_std(aucs), fmt="o", color="C0", capsize=6, markersize=8)
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


def plot_auc(suite: quality.Suite, path: Path) -> bool:
    """Test AUC per finished row (chosen grid point); False when no row has finished."""
    cells = quality.selected_cells(suite)
    if not cells:
        return False
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(cells)), 6))
    draw_auc_panel(ax, cells, "test AUC per model (grid point chosen on validation)")
    ax.set_ylabel("test AUC")
    fig.suptitle("movielens-100k test AUC on the 10,000 test rows (mean ± std over seeds; dots = seeds)", fontsize=11)
    save_figure(fig, path, dpi=130)
    return True


def plot_pretraining_curve(suite: quality.Suite, path: Path, key: str = CURVE_PRETRAINING) -> bool:
    """FLIP_ID test AUC (mean +- std, seeds as dots) against the epoch of the `key` pretraining checkpoint it was
    finetuned from, over the DCNv2 mean +- 2 std band; False without DCNv2 and at least one FLIP_ID point."""
    cells = quality.selected_cells(suite)
    rows = [
        row
        for row in suite.rows
        if row.pretraining == key and row.pretraining_epoch and row.train_fraction is None and row.name in cells
    ]
    if quality.BASE_ROW not in cells or not rows:
        return False
    base = np.array([record["test_auc"] for record in cells[quality.BASE_ROW]])
    fig, ax = plt.subplots(figsize=(8, 5))
    band = 2 * quality.seed_std(base)
    ax.axhspan(base.mean() - band, base.mean() + band, color="grey", alpha=0.2)
    ax.axhline(base.mean(), color="grey", ls="--", lw=1, label=f"DCNv2 from scratch {base.mean():.4f} (± 2 std)")
    epochs = [row.pretraining_epoch for row in rows]
    aucs = [np.array([record["test_auc"] for record in cells[row.name]]) for row in rows]
    ax.errorbar(
        epochs,
        [a.mean() for a in aucs],
        yerr=[quality.seed_std(a) for a in aucs],
        fmt="o-",
        capsize=5,
        label="FLIP_ID-DCNv2 (mean ± std)",
    )
    for epoch, values in zip(epochs, aucs):
        ax.scatter(np.full(len(values), epoch + 0.08), values, s=12, color="C1", zorder=3)
    ax.set_xlabel(f"pretraining epochs (`{key}`: reference recipe, 2-layer MiniLM, batch 256)")
    ax.set_ylabel("test AUC")
    planned = sorted({row.pretraining_epoch for row in suite.rows if row.pretraining == key and row.pretraining_epoch})
    ax.set_xticks(planned)  # the whole planned curve, so that a first point is not drawn alone at the edge
    ax.set_xlim(0, max(planned) + 0.5)
    ax.set_title("FLIP_ID vs DCNv2 as FLIP pretraining goes on (movielens-100k, time split)", fontsize=10)
    save_figure(fig, path, dpi=130)
    return True


def plot_pretraining_losses(suite: quality.Suite, path: Path) -> bool:
    """One column per loss (ICL, MLM, MTM): training (lines) and validation (markers) loss, then the gradient norm
    it sends into the tabular tower (log scale); a last column with the ID-embedding norm. x = epochs. False when no
    pretraining has logged."""
    histories = {key: quality.pretraining_history(suite, key) for key in suite.pretrainings}
    histories = {key: history for key, history in histories.items() if history}
    if not histories:
        return False
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for color, (key, history) in enumerate(histories.items()):
        style = {"color": f"C{color}", "label": key}
        for column, loss in enumerate(LOSSES):
            series = {
                (0, f"{loss}_loss", "-"): axes[0, column],
                (0, f"eval_{loss}_loss", "o"): axes[0, column],
                (1, f"tabular_grad_norm_{loss}", "-"): axes[1, column],
            }
            for (_, name, marker), ax in series.items():
                points = [(entry["epoch"], entry[name]) for entry in history if name in entry]
                if points:
                    ax.plot(*zip(*points), marker, **{**style, "label": f"{key} {'val' if 'eval' in name else ''}"})
        points = [(entry["epoch"], entry["id_embedding_norm"]) for entry in history if "id_embedding_norm" in entry]
        if points:
            axes[0, 3].plot(*zip(*points), **style)
    for column, loss in enumerate(LOSSES):
        axes[0, column].set_title(f"{loss.upper()} loss (line: train window mean, o: validation)", fontsize=9)
        axes[1, column].set_title(f"|grad| of the {loss.upper()} loss into the tabular tower", fontsize=9)
        axes[1, column].set_yscale("log")
    axes[0, 3].set_title("mean L2 norm of the ID-embedding rows", fontsize=9)
    axes[1, 3].axis("off")
    for ax in axes.flat:
        if ax.has_data():
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        "FLIP pretraining on the reference recipe: losses and what each loss sends to the ID tower", fontsize=11
    )
    save_figure(fig, path, dpi=130)
    return True


def plot_roc_calibration(suite: quality.Suite, path: Path, seed: int = 0) -> bool:
    """ROC and reliability curves on test (one seed) of DCNv2 and of the best FLIP_ID row on validation; False when
    either has no cached scores."""
    cells = quality.selected_cells(suite)
    flip_rows = [name for name in cells if name.startswith("FLIP_ID")]
    if quality.BASE_ROW not in cells or not flip_rows:
        return False
    best_flip = max(flip_rows, key=lambda name: np.mean([record["validation_auc"] for record in cells[name]]))
    scores = {}
    for name in (quality.BASE_ROW, best_flip):
        row = suite.row(name)
        point = next(point for point in row.grid if point.label == cells[name][0]["grid_point"])
        npz = quality.predictions_path(suite, row, point, seed)
        if not npz.is_file():
            return False
        scores[name] = np.load(npz)
    fig, (roc_ax, cal_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, data in scores.items():
        draw_roc(roc_ax, data["labels"], data["probs"], name)
        draw_calibration(cal_ax, data["labels"], data["probs"], name)
    roc_ax.set_title(f"ROC, test split, seed {seed}")
    cal_ax.set_title("calibration (10 quantile bins), test split")
    save_figure(fig, path, dpi=130)
    return True


def plot_label_efficiency(suite: quality.Suite, path: Path) -> bool:
    """Test AUC (mean ± std over seeds) against the fraction of train labels, one line per family; False when
    there is nothing to plot."""
    curves = views.label_efficiency(suite)
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for family, curve in curves.items():
        fractions = sorted(curve)
        means = [np.mean(list(curve[f].values())) for f in fractions]
        stds = [quality.seed_std(np.asarray(list(curve[f].values()))) for f in fractions]
        ax.errorbar(fractions, means, yerr=stds, fmt="o-", capsize=4, label=family)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the train labels used for finetuning (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title("label efficiency, movielens-100k time split (mean ± std over seeds)", fontsize=10)
    save_figure(fig, path, dpi=130)
    return True


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quality.add_suite_arguments(parser)
    parser.add_argument("--figures", default="benchmarks", help="where the PNGs go")
    args = parser.parse_args(argv)
    suite = quality.suite_from_args(args)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    figures_made = {
        "quality_auc.png": plot_auc,
        "quality_pretraining_curve.png": plot_pretraining_curve,
        "quality_pretraining_losses.png": plot_pretraining_losses,
        "quality_roc_calibration.png": plot_roc_calibration,
        "quality_label_efficiency.png": plot_label_efficiency,
    }
    written = [figures / name for name, plot in figures_made.items() if plot(suite, figures / name)]
    print("\n".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
