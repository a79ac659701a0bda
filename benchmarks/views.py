"""The views of the quality benchmark where alignment should pay (PROTOCOL.md, "Where alignment should pay"), from
the cached cells of `benchmarks/quality.py`:

- frequency slices of the test split: rows whose movie_id (or user_id) is cold (OOV in train), rare (1-9 train
  rows) or frequent (>= 10 train rows); per model and slice the AUC (mean ± std over seeds, plus a bootstrap 95%
  interval of the seed-averaged AUC for slices under `BOOTSTRAP_BELOW` rows) and the LogLoss; for those slices
  also the paired bootstrap interval of the difference with the table's first row (both score the same rows, so
  their intervals overlap even where one model is better on every resample);
- label efficiency: test AUC against the fraction of the train labels a finetuning saw (`Row.train_fraction`),
  one column per `Row.family` (its plot is `benchmarks/plots.py`'s `quality_label_efficiency.png`);
- the random split: the rows cut by `--split random`, against the random split's own DCNv2 (at the points chosen
  on validation, and each FLIP_ID row at every grid point of DCNv2, paired by seed).

    python benchmarks/views.py [--output_dir outputs/quality] [--records_dir benchmarks/quality_records] \\
        [--write_results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

from processing.atomic_io import replace_marked_section
from processing.schema import FIELD_OOV_ID
from training.ctr_metrics import auc, log_loss

SLICES = ("cold (OOV)", "rare (1-9)", "frequent (>= 10)")
RARE_BELOW = 10
BOOTSTRAP_BELOW = 2000
BOOTSTRAP_SAMPLES = 1000


def frequency_slices(data_dir: str, field: str) -> np.ndarray:
    """(N_test,) index into `SLICES` of every test row, by how often its `field` id occurs in the train split."""
    from processing import FlipProcessor

    column = FlipProcessor.from_pretrained(data_dir).schema.field_names.index(field)
    train_ids, test_ids = (quality.split_field_ids(data_dir, split)[:, column] for split in ("train", "test"))
    counts = np.bincount(train_ids, minlength=int(max(train_ids.max(), test_ids.max())) + 1)[test_ids]
    return np.where(test_ids == FIELD_OOV_ID, 0, np.where(counts < RARE_BELOW, 1, 2))


def bootstrap_interval(labels: np.ndarray, statistic, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of `statistic(rows)` over resamples `rows` (N,) of the N rows of `labels` (resamples
    with one class only skipped)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_SAMPLES):
        sample = rng.integers(0, len(labels), len(labels))
        if 0 < labels[sample].sum() < len(sample):
            values.append(statistic(sample))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_auc_interval(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """95% bootstrap interval of the AUC of `probs` (N,) against `labels` (N,)."""
    return bootstrap_interval(labels, lambda rows: auc(labels[rows], probs[rows]))


def mean_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """The mean over seeds of the AUC of each row of `probs` (seeds, N) against `labels` (N,)."""
    return float(np.mean([auc(labels, p) for p in probs]))


def bootstrap_difference_interval(labels: np.ndarray, probs: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """95% paired bootstrap interval of mean_auc(`probs`) - mean_auc(`base`) (both (seeds, N)) over resamples of the
    rows, the same rows for both models."""
    return bootstrap_interval(
        labels, lambda rows: mean_auc(labels[rows], probs[:, rows]) - mean_auc(labels[rows], base[:, rows])
    )


def test_scores(
    suite: quality.Suite, row: quality.Row, point: quality.GridPoint, seeds: Sequence[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels (N,), probabilities (seeds, N)) of one row's cells at `point`, from their `.npz`; None if one is
    missing."""
    paths = [quality.predictions_path(suite, row, point, seed) for seed in seeds]
    if not all(path.is_file() for path in paths):
        return None
    scores = [np.load(path) for path in paths]
    return scores[0]["labels"], np.stack([score["probs"] for score in scores])


def chosen_test_scores(suite: quality.Suite, records: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    """`test_scores` of one row's chosen cells (`records`, at the grid point chosen on validation)."""
    row = suite.row(records[0]["row"])
    point = next(point for point in row.grid if point.label == records[0]["grid_point"])
    return test_scores(suite, row, point, [record["seed"] for record in records])


def slice_cell(labels: np.ndarray, probs: np.ndarray, base: np.ndarray | None = None) -> str:
    """`AUC mean ± std [bootstrap interval]; LogLoss` of one slice over the seeds (rows of `probs`, (seeds, N)); with
    the `base` row's probabilities ((seeds, N), the first row of the table) also `vs base: difference [paired
    interval]` of the seed-averaged scores."""
    if len(labels) == 0 or labels.min() == labels.max():
        return "n/a (one class)"
    aucs = np.array([auc(labels, p) for p in probs])
    text = f"{aucs.mean():.4f} ± {quality.seed_std(aucs):.4f}"
    if len(labels) < BOOTSTRAP_BELOW:
        low, high = bootstrap_auc_interval(labels, probs.mean(0))
        text += f" [{low:.3f}, {high:.3f}]"
    text += f"; LogLoss {np.mean([log_loss(labels, p) for p in probs]):.4f}"
    if base is not None and len(labels) < BOOTSTRAP_BELOW:
        difference = aucs.mean() - mean_auc(labels, base)
        low, high = bootstrap_difference_interval(labels, probs, base)
        text += f"; vs base {difference:+.4f} [{low:+.3f}, {high:+.3f}]"
    return text


def slice_table(suite: quality.Suite, field: str, rows: list[str]) -> str:
    """Markdown: the slices of `field` (test rows, positives) and, per finished row of `rows`, each slice's metrics
    (against the first row, the base, on the bootstrapped slices); a finished row whose test scores are not on this
    machine (an artefact, unlike the records) says so."""
    slices = frequency_slices(quality.prepared_data(suite), field)
    cells = quality.selected_cells(suite)
    scored = {name: chosen_test_scores(suite, cells[name]) for name in rows if name in cells}
    lines = [f"| model ({field}) | " + " | ".join(SLICES) + " |", "|---|" + "---|" * len(SLICES)]
    found = [scores for scores in scored.values() if scores is not None]
    if found:
        labels = found[0][0]
        sizes = [f"{int((slices == k).sum())} ({int(labels[slices == k].sum())})" for k in range(len(SLICES))]
        lines.append("| test rows (positives) | " + " | ".join(sizes) + " |")
    base = scored.get(rows[0])
    for name, scores in scored.items():
        if scores is None:
            parts = ["no test scores on this machine (rerun the row's cells)"] * len(SLICES)
        else:
            labels, probs = scores
            against = base[1] if base is not None and name != rows[0] else None
            parts = [
                slice_cell(labels[in_slice], probs[:, in_slice], None if against is None else against[:, in_slice])
                for in_slice in (slices == k for k in range(len(SLICES)))
            ]
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def slice_by_point_table(suite: quality.Suite, field: str, slice_index: int, rows: Sequence[str]) -> str:
    """Markdown: the test AUC on one slice of `field` (`SLICES[slice_index]`) of each of `rows` at every grid point
    of the first row (the base): `by_point_table` on that slice. It separates what pretraining changes on a slice
    from what the grid point that validation picked for each row changes."""
    in_slice = frequency_slices(quality.prepared_data(suite), field) == slice_index
    return by_point_table(suite, rows, in_slice, f"{field}: {SLICES[slice_index]}")


def by_point_table(suite: quality.Suite, rows: Sequence[str], in_rows: np.ndarray | slice, title: str) -> str:
    """Markdown: the test AUC on the test rows `in_rows` (a (N,) mask, or `slice(None)` for all) of each of `rows` at
    every grid point of the first row (the base), each row at the same point as the base: the mean over seeds and,
    for the other rows, the difference with the base paired by seed ("-": no cells there). Exploratory: the verdicts
    read only the points that validation chose."""
    points = suite.row(rows[0]).grid
    lines = [f"| model ({title}) | " + " | ".join(point.label for point in points) + " |"]
    lines.append("|---|" + "---|" * len(points))
    base: dict[str, dict[int, float]] = {}
    for name in rows:
        row, texts = suite.row(name), []
        for point in points:
            scores = test_scores(suite, row, point, row.seeds) if point in row.grid else None
            if scores is None:
                recorded = point in row.grid and quality.cell_path(suite, row, point, row.seeds[0]).is_file()
                texts.append("no scores on this machine" if recorded else "-")
                continue
            labels, probs = scores
            values = {seed: auc(labels[in_rows], p[in_rows]) for seed, p in zip(row.seeds, probs, strict=True)}
            if name == rows[0]:
                base[point.label], paired = values, ""
            else:
                paired = paired_difference(values, base.get(point.label, {}))
            texts.append(f"{np.mean(list(values.values())):.4f}{paired.replace('; paired by seed: ', ', ')}")
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def label_efficiency(suite: quality.Suite) -> dict[str, dict[float, dict[int, float]]]:
    """{family: {train fraction: {seed: test AUC of the chosen cell}}} of the finished rows that name a `family`."""
    cells = quality.selected_cells(suite)
    curves: dict[str, dict[float, dict[int, float]]] = {}
    for row in suite.rows:
        if row.family and row.name in cells:
            fraction = row.train_fraction or 1.0
            curves.setdefault(row.family, {})[fraction] = {r["seed"]: r["test_auc"] for r in cells[row.name]}
    return curves


def paired_difference(values: dict[int, float], base: dict[int, float]) -> str:
    """Mean ± std of the per-seed test AUC difference over the seeds both rows ran: a seed fixes the label subset
    and the initialisation, so the pairing removes the subset-to-subset spread that dominates small fractions."""
    seeds = sorted(values.keys() & base.keys())
    if len(seeds) < 2:
        return ""
    differences = np.array([values[seed] - base[seed] for seed in seeds])
    return f"; paired by seed: {differences.mean():+.4f} ± {quality.seed_std(differences):.4f}"


def label_efficiency_table(suite: quality.Suite) -> str:
    """Markdown: test AUC mean ± std (seeds) per family and fraction of the train labels; a FLIP_ID family's cells
    add the 2-std verdict against the DCNv2 family of the same subset kind at the same fraction (the verdict) and
    the difference paired by seed (information: it is not PROTOCOL.md's rule)."""
    curves = label_efficiency(suite)
    fractions = sorted({fraction for curve in curves.values() for fraction in curve})
    lines = ["| model | " + " | ".join(f"{f:.0%} of the labels" for f in fractions) + " |"]
    lines.append("|---|" + "---|" * len(fractions))
    for family, curve in curves.items():
        base = curves.get("DCNv2 (oldest rows)" if "(oldest rows)" in family else "DCNv2", {})
        texts = []
        for fraction in fractions:
            if fraction not in curve:
                texts.append("-")
                continue
            values = np.asarray(list(curve[fraction].values()))
            text = f"{values.mean():.4f} ± {quality.seed_std(values):.4f} ({len(values)})"
            if family.startswith("FLIP_ID") and fraction in base:
                base_values = np.asarray(list(base[fraction].values()))
                text += "; vs DCNv2: " + quality.verdict(auc_summary(values), auc_summary(base_values))
                text += paired_difference(curve[fraction], base[fraction])
            texts.append(text)
        lines.append(f"| {family} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def auc_summary(values: np.ndarray) -> dict:
    """The fields of a row summary that `quality.verdict` reads."""
    return {"auc": (float(values.mean()), quality.seed_std(values)), "seeds": len(values)}


SLICE_ROWS = (
    "DCNv2",
    "FLIP_ID-DCNv2 [ref10 epoch 1]",
    "FLIP_ID-DCNv2 [ref10 epoch 2]",
    "FLIP_ID-DCNv2 [ref10 epoch 3]",
    "FLIP_ID-DCNv2 [ref10 epoch 10]",
    *(f"FLIP_PLM [{key}]" for key in quality.REF10),
    *(f"FLIP (joint) [{key}]" for key in quality.REF10),
    "PLM without FLIP pretraining (MiniLM-L2)",
)
# the slices read at every grid point (both models at the same point), with the rows of the curve and ablations
POINT_SLICES = (("user_id", 2), ("movie_id", 1))
POINT_SLICE_ROWS = (
    "DCNv2",
    *(f"FLIP_ID-DCNv2 [ref10 epoch {epoch}]" for epoch in (1, 2, 3, 4, 5, 6, 7, 10)),
    *(f"FLIP_ID-DCNv2 [ref10 epoch 3] w/o {loss}" for loss in ("ICL", "MLM", "MTM")),
)
RANDOM_SPLIT_BASE = "DCNv2 (random split)"
RANDOM_SPLIT_POINT_ROWS = (RANDOM_SPLIT_BASE, *(f"FLIP_ID-DCNv2 [rand10 epoch {epoch}]" for epoch in (1, 10)))


def random_split_table(suite: quality.Suite) -> str:
    """Markdown: the finished random-split rows, with the verdict against the random split's DCNv2."""
    cells = quality.selected_cells(suite)
    summaries = {
        row.name: quality.summarize(cells[row.name])
        for row in suite.rows
        if row.split == "random" and row.name in cells
    }
    base = summaries.get(RANDOM_SPLIT_BASE)
    lines = ["| model | grid point | test AUC | test LogLoss | val AUC | vs DCNv2 (random split) | seeds |"]
    lines.append("|---|" + "---|" * 6)
    for name, s in summaries.items():
        vs = "(base)" if name == RANDOM_SPLIT_BASE else quality.verdict(s, base) if base else "n/a"
        lines.append(
            f"| {name} | {s['grid_point']} | {s['auc'][0]:.4f} ± {s['auc'][1]:.4f} | {s['logloss'][0]:.4f} ± "
            f"{s['logloss'][1]:.4f} | {s['val_auc']:.4f} | {vs} | {s['seeds']} |"
        )
    return "\n".join(lines)


def missing_scores(suite: quality.Suite, names: Sequence[str]) -> list[str]:
    """The recorded cells of the rows `names` whose test scores are on neither the records nor this machine (cells
    recorded before their scores were kept beside them, `quality.recorded_scores`, on a new machine)."""
    return [
        f"{row.name} [{point.label}] seed {seed}"
        for row in suite.rows
        if row.name in names
        for point in row.grid
        for seed in row.seeds
        if quality.cell_path(suite, row, point, seed).is_file()
        and not quality.predictions_path(suite, row, point, seed).is_file()
    ]


def views_markdown(suite: quality.Suite) -> str:
    """The three views as Markdown sections (tables of whatever has finished)."""
    slices = "\n\n".join(slice_table(suite, field, list(SLICE_ROWS)) for field in ("movie_id", "user_id"))
    by_point = "\n\n".join(
        slice_by_point_table(suite, field, index, POINT_SLICE_ROWS) for field, index in POINT_SLICES
    )
    return (
        "## Where alignment should pay: frequency slices, label efficiency, a random split\n\n"
        "Generated by `python benchmarks/views.py --write_results benchmarks/RESULTS.md` from the cells of the "
        "quality benchmark above (the same protocol, grid and seeds; bootstrap intervals for small slices).\n\n"
        "### Frequency slices of the test split (time split)\n\n"
        + slices
        + "\n\n### Two slices at every grid point (each FLIP_ID row at DCNv2's point; paired by seed)\n\n"
        + by_point
        + "\n\n### Label efficiency (time split; FLIP_ID from `ref10` epoch 10; early curves from epochs 1 and 2)\n\n"
        + label_efficiency_table(suite)
        + "\n\n### Random 80/10/10 split of rows (seed 0)\n\n"
        + random_split_table(suite)
        + "\n\nAt every grid point (each FLIP_ID row at DCNv2's point; paired by seed):\n\n"
        + by_point_table(suite, RANDOM_SPLIT_POINT_ROWS, slice(None), "random split: all test rows")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quality.add_suite_arguments(parser)
    parser.add_argument("--write_results", default=None, help="also write the views into this file's section")
    parser.add_argument("--notes", default=None, help="Markdown around the views ({{VIEWS}} marks where they go)")
    parser.add_argument(
        "--allow_missing_scores",
        action="store_true",
        help="write the views even where recorded cells have no test scores here (their numbers become gaps)",
    )
    args = parser.parse_args(argv)
    suite = quality.suite_from_args(args)
    missing = missing_scores(suite, {*SLICE_ROWS, *POINT_SLICE_ROWS, *RANDOM_SPLIT_POINT_ROWS})
    if args.write_results and missing and not args.allow_missing_scores:
        raise SystemExit(
            f"{len(missing)} recorded cells have no test scores on this machine (e.g. {missing[:3]}): writing "
            f"would replace their numbers in {args.write_results} with gaps. Rerun those cells (their test scores "
            f"are then kept beside their records), or pass --allow_missing_scores."
        )
    body = views_markdown(suite)
    print(body)
    if args.write_results:
        notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
        replace_marked_section(args.write_results, notes.replace("{{VIEWS}}", body) if notes else body, "views")


if __name__ == "__main__":
    main()
