"""Any table (CSV / Parquet / JSON lines) described by a small JSON or YAML schema file.

    # my_data.yaml                      (paths are relative to this file)
    data_files: ratings.csv             # a path or a list; format from the extension (.csv .tsv .parquet .jsonl)
    fields:
      - user_id                         # a bare column name: display name "user id"
      - {name: gender, display_name: gender, value_map: {M: male, F: female}}
      - {name: item_id, display_name: item, num_buckets: 100000}   # hashed field
    label_column: rating
    label_threshold: 4                  # label = rating >= 4; omit it when the column is already 0/1
    # positive_labels: ['yes']          # text labels instead: these values are clicks, any other is not
    time_column: timestamp              # omit: file order
    tie_columns: [user_id, item_id]     # optional tie-breakers of the time sort (raw values)

`flip prepare rows.csv --label clicked` infers such a file for a table (`infer_schema`), to check and edit.
`load_ctr_dataset("my_data.yaml")` then gives the usual DatasetDict (fields as display strings, the label column
with its raw values, time). The label rules travel with the fitted schema (`flip_schema.json`), so the saved
processor maps the same raw column of new tables to `labels`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..schema import FieldSpec, TabularSchema, normalize_values
from .base import Recipe, as_display_strings, sort_for_split

# Text tables are read as strings (like `flip predict` reads them): ids such as zip codes keep their leading zeros.
# The time / tie columns are made numeric again before sorting (see `_numeric_if_possible`).
READERS = {
    ".csv": lambda path: pd.read_csv(path, dtype=str),
    ".tsv": lambda path: pd.read_csv(path, sep="\t", dtype=str),
    ".parquet": pd.read_parquet,
    ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    ".json": lambda path: pd.read_json(path, lines=True, dtype=False),
}
SPEC_KEYS = {"name", "display_name", "num_buckets", "min_count"}
FIELD_KEYS = SPEC_KEYS | {"value_map"}
REQUIRED_KEYS = {"data_files", "fields", "label_column"}
OPTIONAL_KEYS = {"name", "label_threshold", "positive_labels", "time_column", "tie_columns"}


def read_schema_file(path: str | os.PathLike) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix in {".yaml", ".yml"}:
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def check_schema_config(config: Any, path: str | os.PathLike) -> None:
    """Raise `ValueError` naming `path` and the key on a malformed schema file (missing or misspelt keys, bad
    threshold, duplicate fields): a misspelt optional key such as `num_bucket` must not be silently ignored."""
    if not isinstance(config, dict):
        raise TypeError(f"{path}: a table schema file holds a mapping, got {type(config).__name__}")
    problems = [f"missing key {key!r}" for key in sorted(REQUIRED_KEYS - set(config))]
    problems += [f"unknown key {key!r}" for key in sorted(set(config) - REQUIRED_KEYS - OPTIONAL_KEYS)]
    fields = config.get("fields") or []
    if "fields" in config and (not isinstance(fields, list) or not fields):
        problems.append("'fields' must be a non-empty list")
        fields = []
    for f in fields:
        if isinstance(f, dict):
            if "name" not in f:
                problems.append(f"field {f} has no 'name'")
            problems += [f"field {f.get('name')!r}: unknown key {k!r}" for k in sorted(set(f) - FIELD_KEYS)]
        elif not isinstance(f, str):
            problems.append(f"field {f!r} is neither a column name nor a mapping")
    names = [f if isinstance(f, str) else f.get("name") for f in fields if isinstance(f, (str, dict))]
    problems += [f"field {n!r} is listed twice" for n in sorted({n for n in names if names.count(n) > 1})]
    threshold = config.get("label_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        problems.append(f"label_threshold must be a number, got {threshold!r}")
    positive = config.get("positive_labels")
    if positive is not None and (not isinstance(positive, list) or not positive):
        problems.append(f"positive_labels must be a non-empty list of label values, got {positive!r}")
    elif positive and any(isinstance(value, bool) for value in positive):
        problems.append(f"positive_labels {positive!r} holds a YAML boolean: quote the values, e.g. ['yes']")
    if positive is not None and threshold is not None:
        problems.append("set label_threshold (numeric labels) or positive_labels (text labels), not both")
    if problems:
        allowed = f"(keys: {sorted(REQUIRED_KEYS | OPTIONAL_KEYS)}; field keys: {sorted(FIELD_KEYS)})"
        raise ValueError(f"Table schema file {path}: " + "; ".join(problems) + f" {allowed}")


def read_table(path: Path) -> pd.DataFrame:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    reader = READERS.get(suffixes[-1] if suffixes else "")
    if reader is None:
        raise ValueError(f"Unsupported table format {path.name!r}: use one of {sorted(READERS)}")
    return reader(path)


def _numeric_if_possible(values: pd.Series) -> pd.Series:
    """Numbers when every non-missing value parses as one (so time and id columns read as text sort as numbers)."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else values


def data_file_list(config: dict[str, Any]) -> list[str]:
    """The schema file's `data_files` as a list (one path or several)."""
    files = config["data_files"]
    return [files] if isinstance(files, (str, os.PathLike)) else list(files)


def table_recipe(schema_path: str | os.PathLike) -> Recipe:
    """A `Recipe` for the table described by `schema_path` (see the module docstring)."""
    config = read_schema_file(schema_path)
    check_schema_config(config, schema_path)
    fields = [{"name": f} if isinstance(f, str) else dict(f) for f in config["fields"]]
    label_rules = TabularSchema(
        [], config["label_column"], config.get("label_threshold"), positive_labels=config.get("positive_labels")
    )
    label_column = label_rules.label_column
    time_column, ties = config.get("time_column"), list(config.get("tie_columns", []))
    base_dir = Path(schema_path).resolve().parent

    def build(cache_dir: str | None = None, data_files: str | list[str] | None = None) -> pd.DataFrame:
        files = data_file_list({"data_files": data_files or config["data_files"]})
        frame = pd.concat([read_table(base_dir / f) for f in files], ignore_index=True)
        needed = [f["name"] for f in fields] + [label_column] + [c for c in [time_column, *ties] if c]
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise ValueError(f"Table {files} is missing the columns {missing} named in {schema_path}")
        if frame.empty:
            raise ValueError(f"Table {files} named in {schema_path} has no rows")
        label_rules.labels(frame[label_column])  # fails early, with the rows' numbers in the files
        for column in dict.fromkeys(c for c in [time_column, *ties] if c):
            frame[column] = _numeric_if_possible(frame[column])
        frame = sort_for_split(frame, [c for c in [time_column, *ties] if c])
        out = pd.DataFrame({f["name"]: as_display_strings(frame[f["name"]], f.get("value_map")) for f in fields})
        out[label_column] = frame[label_column]
        if time_column:
            out[time_column] = frame[time_column]
        return out

    specs = [FieldSpec(**{k: v for k, v in f.items() if k in SPEC_KEYS}) for f in fields]
    return Recipe(
        config.get("name", Path(schema_path).stem),
        specs,
        build,
        time_column=time_column,
        label_column=label_column,
        label_threshold=label_rules.label_threshold,
        positive_labels=label_rules.positive_labels,
        source_files=[str(Path(schema_path).resolve()), *(str(base_dir / f) for f in data_file_list(config))],
    )


TIME_COLUMN_NAMES = ("timestamp", "time", "ts", "datetime", "date", "event_time")
POSITIVE_WORDS = ("1", "yes", "y", "true", "clicked", "click", "positive", "pos")


def infer_schema(
    table: str | os.PathLike,
    label_column: str,
    label_threshold: float | None = None,
    positive_labels: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(a schema-file config for `table`, notes on what was guessed): every column but the label and a time column
    (found by name) is a categorical field, except columns with a different value on every row (row ids); the label
    rules come from the arguments, else from the label values (0/1, or two text values one of which means a click)."""
    path = Path(table)
    frame = read_table(path)
    if label_column not in frame.columns:
        raise ValueError(f"{path} has no column {label_column!r} (columns: {list(frame.columns)})")
    time_column = next((c for c in frame.columns if c.lower() in TIME_COLUMN_NAMES and c != label_column), None)
    rest = [column for column in frame.columns if column not in (label_column, time_column)]
    row_ids = [column for column in rest if len(frame) > 20 and frame[column].nunique() == len(frame)]
    config: dict[str, Any] = {"data_files": path.name, "fields": [c for c in rest if c not in row_ids]}
    config["label_column"] = label_column
    config.update(label_rules(frame[label_column], label_column, label_threshold, positive_labels))
    notes = [f"time column: {time_column}" if time_column else "no time column found: the split keeps the file order"]
    notes += [f"left out {column!r}: a different value on every row (an id)" for column in row_ids]
    if time_column:
        config["time_column"] = time_column
    return config, notes


def label_rules(
    values: pd.Series, column: str, label_threshold: float | None, positive_labels: list[str] | None
) -> dict[str, Any]:
    """`label_threshold` / `positive_labels` as given, else what the values imply (none for 0/1)."""
    if label_threshold is not None:
        return {"label_threshold": label_threshold}
    if positive_labels:
        return {"positive_labels": positive_labels}
    distinct = sorted(set(normalize_values(values)) - {""})
    if {value.lower() for value in distinct} <= {"0", "1", "true", "false"}:
        return {}
    clicks = [value for value in distinct if value.lower() in POSITIVE_WORDS]
    if len(distinct) == 2 and len(clicks) == 1:
        return {"positive_labels": clicks}
    raise ValueError(
        f"cannot tell which values of the label column {column!r} are clicks ({distinct[:6]}): pass --label_threshold "
        "T (numbers: label = value >= T) or --positive_labels VALUE [VALUE ...] (text)"
    )


def write_schema_file(config: dict[str, Any], path: str | os.PathLike, notes: list[str], command: str) -> None:
    """The inferred `config` as a commented YAML schema file, for the user to check and edit."""
    import yaml

    header = [f"# Inferred by `{command}`: check and edit it, then prepare it with `flip prepare {Path(path).name}`."]
    header += [f"# {note}" for note in notes] + ["# Keys: `flip prepare --help`."]
    Path(path).write_text("\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
