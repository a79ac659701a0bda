"""What the ID embeddings know: linear probes of an attribute of a user or a movie from its ID-embedding row.

FLIP pretraining is meant to teach the ID tower what the text says about each value. A direct test: can a linear
classifier read a movie's genre from its `movie_id` embedding row, or a user's gender or occupation from the
`user_id` row? The models probed: every epoch checkpoint of every pretraining of `benchmarks/quality.py`; the
finetuned runs of its ID rows (DCNv2 from scratch, FLIP_ID; every label fraction and split; one probe per seed) at
their grid point chosen on validation and at the point that keeps the pretrained table (ID tables at lr 1e-4); and
a random table of the same shape (the control). The score is the balanced accuracy of a logistic regression,
5-fold cross-validated over the ids seen in train (chance = 1 / number of classes, whatever their sizes).

The scores of every probed model are recorded under `RECORDS_DIR/probes/` (its path under `--output_dir`, as
`.json`, with the sha256 of the table they were read from), tracked in git like the cells: a model still on this
machine is probed again only when its table changed; a model gone from it keeps its recorded scores.

    python benchmarks/probes.py [--output_dir outputs/quality] [--records_dir benchmarks/quality_records] \\
        [--write_results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

from processing.atomic_io import replace_marked_section, write_json
from processing.schema import NUM_RESERVED_IDS

PROBES = (("movie_id", "genre"), ("user_id", "gender"), ("user_id", "occupation"))
FOLDS = 5
TABLE = "flip.tabular_model.embeddings.weight"


def id_attributes(field_ids: np.ndarray, key: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (M,), classes (M,)): every local id of column `key` of the rows `field_ids` (N, F), reserved ids
    excepted, with the local id of column `target` it occurs with most often (a movie's genre, a user's gender).
    Ids whose class has fewer than `FOLDS` members are left out (stratified cross-validation needs one per fold)."""
    pairs, counts = np.unique(field_ids[:, [key, target]], axis=0, return_counts=True)
    pairs = pairs[np.lexsort((-counts, pairs[:, 0]))]  # by id, then most frequent class first
    ids, first = np.unique(pairs[:, 0], return_index=True)
    classes = pairs[first, 1]
    keep = ids >= NUM_RESERVED_IDS
    ids, classes = ids[keep], classes[keep]
    values, sizes = np.unique(classes, return_counts=True)
    common = np.isin(classes, values[sizes >= FOLDS])
    return ids[common], classes[common]


def probe_accuracy(features: np.ndarray, classes: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of a logistic regression of `classes` (M,) on `features` (M, E), standardised within each
    training fold, averaged over `FOLDS` stratified folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, classes, cv=folds, scoring="balanced_accuracy").mean())


def embedding_table(model_dir: Path) -> tuple[np.ndarray, list[int], list[str]]:
    """(table (V, E), field offsets, field names) of the shared ID-embedding table of a saved FLIP model."""
    from safetensors import safe_open

    config = json.loads((model_dir / "config.json").read_text())
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as weights:
        table = weights.get_tensor(TABLE).float().numpy()
    offsets = np.concatenate([[0], np.cumsum(config["field_vocab_sizes"])[:-1]]).tolist()
    return table, offsets, config["field_names"]


def probe_scores(table: np.ndarray, offsets: list[int], names: list[str], train_ids: np.ndarray) -> list[float]:
    """Per probe of `PROBES`, the accuracy of reading the attribute from the key field's rows of `table` (V, E);
    `train_ids` (N, F) are the local field ids of the train rows the model saw."""
    scores = []
    for key, target in PROBES:
        column = names.index(key)
        ids, classes = id_attributes(train_ids, column, names.index(target))
        scores.append(probe_accuracy(table[offsets[column] + ids], classes))
    return scores


def chance_levels(names: list[str], train_ids: np.ndarray) -> list[float]:
    """1 / number of classes of every probe (the balanced accuracy of any guess that ignores the features)."""
    return [
        1 / len(np.unique(id_attributes(train_ids, names.index(key), names.index(target))[1]))
        for key, target in PROBES
    ]


class Source(NamedTuple):
    """Models whose ID tables are probed together: one line of the table."""

    label: str
    grid_point: str  # "-" for a pretraining checkpoint
    data: str  # the prepared folder whose train split gives the ids and their attributes
    folders: list[Path]  # one saved model per seed
    validation_auc: float | None = None  # mean over the seeds; None for a pretraining checkpoint
    epoch: int | None = None  # the pretraining epoch of a pretraining checkpoint


def sources(suite: quality.Suite) -> list[Source]:
    """Every pretraining's epoch checkpoints, then the finetuned seeds of every ID row (all label fractions and
    splits) at its grid point chosen on validation and, once all its seeds ran, at `KEEP_PRETRAINED_TABLES`: does
    the table that keeps what pretraining wrote score higher on validation?"""
    found = []
    for key, spec in suite.pretrainings.items():
        folder = quality.pretraining_dir(suite, key)
        checkpoints = recorded_checkpoints(suite, folder) | quality.epoch_checkpoints(folder)
        if not checkpoints:  # nothing to probe: do not prepare its data
            continue
        data = quality.prepared_data(suite, spec.split, spec.prompt_hidden_fields)
        for epoch, checkpoint in sorted(checkpoints.items()):
            found.append(Source(f"`{key}` epoch {epoch} (pretrained)", "-", data, [checkpoint], epoch=epoch))
    cells = quality.load_cells(suite)
    for name, chosen in quality.chosen_points(suite, cells).items():
        row = suite.row(name)
        if row.mode != "id":
            continue
        for point in row.grid:
            records = cells[name].get(point.label, [])
            is_chosen = point.label == chosen
            if not is_chosen and (point != quality.KEEP_PRETRAINED_TABLES or len(records) < len(row.seeds)):
                continue
            found.append(
                Source(
                    f"{name} (finetuned)",
                    f"{point.label} (chosen on val)" if is_chosen else point.label,
                    quality.prepared_data(suite, row.split),
                    [Path(quality.run_dir(suite, row, point, record["seed"])) for record in records],
                    float(np.mean([record["validation_auc"] for record in records])),
                )
            )
    return found


def probe_record_path(suite: quality.Suite, model: Path) -> Path:
    """The probe record of the saved model `model` (a folder under the suite's `output_dir`): the same relative
    path under the suite's records, in `probes/`, as `.json`."""
    return suite.records / "probes" / f"{Path(model).relative_to(suite.output_dir)}.json"


def recorded_checkpoints(suite: quality.Suite, pretraining: Path) -> dict[int, Path]:
    """{epoch: checkpoint folder} of the epoch checkpoints of `pretraining` that have a probe record, whether or
    not the checkpoint is still on this machine."""
    records = probe_record_path(suite, pretraining).with_suffix("").glob("checkpoint-*.json")
    return {json.loads(path.read_text())["epoch"]: pretraining / path.stem for path in records}


def model_probes(suite: quality.Suite, model: Path, train_ids: np.ndarray, epoch: int | None = None) -> dict | None:
    """The probe record of the saved model `model` ({"scores": one per `PROBES`, "table_sha256", "table_shape",
    "offsets", "names", "epoch"}): the recorded one when it was read from the same table (or when the model is not
    on this machine), else the model is probed and its record written. None when there is neither."""
    path = probe_record_path(suite, model)
    record = json.loads(path.read_text()) if path.is_file() else None
    if not (Path(model) / "model.safetensors").is_file():
        return record
    table, offsets, names = embedding_table(Path(model))
    digest = hashlib.sha256(table.tobytes()).hexdigest()
    probes = [list(probe) for probe in PROBES]
    if record and record["table_sha256"] == digest and record["probes"] == probes:
        return record
    record = {"probes": probes, "scores": probe_scores(table, offsets, names, train_ids), "table_sha256": digest}
    record |= {"table_shape": list(table.shape), "offsets": offsets, "names": names, "epoch": epoch}
    write_json(path, record)
    return record


def format_scores(values: list[list[float]]) -> list[str]:
    """Per probe, the mean (± std over the folders when there are several) of `values` (folders, probes)."""
    values = np.asarray(values)
    if len(values) == 1:
        return [f"{v:.3f}" for v in values[0]]
    return [f"{m:.3f} ± {s:.3f}" for m, s in zip(values.mean(0), values.std(0, ddof=1))]


def control_lines(record: dict, train_ids: np.ndarray) -> list[str]:
    """The table's control lines: the chance level of every probe, and the scores of a random normal table of the
    shape of the probe `record`'s table."""
    noise = np.random.default_rng(0).normal(size=record["table_shape"])
    noise_scores = probe_scores(noise, record["offsets"], record["names"], train_ids)
    chance = chance_levels(record["names"], train_ids)
    return [
        f"| chance (1 / classes) | - | {' | '.join(f'{c:.3f}' for c in chance)} | - | - |",
        f"| random table | - | {' | '.join(format_scores([noise_scores]))} | - | 1 |",
    ]


def probe_table(suite: quality.Suite) -> str:
    """Markdown: the chance level and a random table of the same shape (controls), then one line per source of
    `sources` (mean ± std over its models, and their validation AUC)."""
    found = sources(suite)
    if not found:
        return "(no model to probe yet)"
    field_ids = {data: quality.split_field_ids(data, "train") for data in {source.data for source in found}}
    lines, controls = [], []
    for source in found:
        train_ids = field_ids[source.data]
        records = [model_probes(suite, folder, train_ids, source.epoch) for folder in source.folders]
        records = [record for record in records if record is not None]
        if not records:
            continue
        controls = controls or control_lines(records[0], train_ids)
        auc = "-" if source.validation_auc is None else f"{source.validation_auc:.4f}"
        scores = format_scores([record["scores"] for record in records])
        lines.append(f"| {' | '.join([source.label, source.grid_point, *scores, auc, str(len(records))])} |")
    if not lines:
        return "(no model on this machine and no probe record yet)"
    header = " | ".join(f"{key} -> {target}" for key, target in PROBES)
    return "\n".join(
        [
            f"| ID embeddings | grid point | {header} | val AUC | models |",
            "|---" * (len(PROBES) + 4) + "|",
            *controls,
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quality.add_suite_arguments(parser)
    parser.add_argument("--write_results", default=None, help="also write the table into this file")
    parser.add_argument("--notes", default=None, help="Markdown around the table ({{TABLES}} marks where it goes)")
    args = parser.parse_args(argv)
    table = probe_table(quality.suite_from_args(args))
    print(table)
    if args.write_results:
        notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else "{{TABLES}}"
        replace_marked_section(args.write_results, notes.replace("{{TABLES}}", table), "probes")


if __name__ == "__main__":
    main()
