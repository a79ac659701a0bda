"""Any table (CSV / Parquet / JSON lines) described by a small JSON or YAML schema file.

    # my_data.yaml                      (paths are relative to this file)
    data_files: ratings.csv             # a path or a list; format from the extension (.csv .tsv .parquet .jsonl)
    fields:
      - user_id                         # a bare column name: display name "user id"
      - {name: gender, display_name: gender, value_map: {M: male, F: female}}
      - {name: item_id, display_name: item, num_buckets: 100000}   # hashed field
    label_column: rating
    label_threshold: 4                  # label = rating >= 4; omit it when the column is already 0/1
    time_column: timestamp              # omit: file order
    tie_columns: [user_id, item_id]     # optional tie-breakers of the time sort (raw values)

`load_ctr_dataset("my_data.yaml")` then gives the usual DatasetDict (fields as display strings, `label`, time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..schema import FieldSpec
from .base import LABEL, Recipe, as_display_strings, binarize, sort_for_split

READERS = {
    ".csv": pd.read_csv,
    ".tsv": lambda path: pd.read_csv(path, sep="\t"),
    ".parquet": pd.read_parquet,
    ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    ".json": lambda path: pd.read_json(path, lines=True, dtype=False),
}
SPEC_KEYS = {"name", "display_name", "num_buckets", "min_count"}


def read_schema_file(path: str | os.PathLike) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix in {".yaml", ".yml"}:
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def read_table(path: Path) -> pd.DataFrame:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    reader = READERS.get(suffixes[-1] if suffixes else "")
    if reader is None:
        raise ValueError(f"Unsupported table format {path.name!r}: use one of {sorted(READERS)}")
    return reader(path)


def _binary_labels(values: pd.Series, column: str) -> pd.Series:
    bad = ~pd.to_numeric(values, errors="coerce").isin([0, 1])
    if bad.any():
        raise ValueError(
            f"Label column {column!r}: {int(bad.sum())} of {len(values)} rows are not 0/1 "
            "(set label_threshold to binarise ratings)"
        )
    return pd.to_numeric(values).astype(np.int64)


def table_recipe(schema_path: str | os.PathLike) -> Recipe:
    """A `Recipe` for the table described by `schema_path` (see the module docstring)."""
    config = read_schema_file(schema_path)
    fields = [{"name": f} if isinstance(f, str) else dict(f) for f in config["fields"]]
    label_column, threshold = config["label_column"], config.get("label_threshold")
    time_column, ties = config.get("time_column"), list(config.get("tie_columns", []))
    base_dir = Path(schema_path).resolve().parent

    def build(cache_dir: str | None = None, data_files: str | list[str] | None = None) -> pd.DataFrame:
        files = data_files or config["data_files"]
        files = [files] if isinstance(files, (str, os.PathLike)) else files
        frame = pd.concat([read_table(base_dir / f) for f in files], ignore_index=True)
        needed = [f["name"] for f in fields] + [label_column] + [c for c in [time_column, *ties] if c]
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise ValueError(f"Table {files} is missing the columns {missing} named in {schema_path}")
        frame = sort_for_split(frame, [c for c in [time_column, *ties] if c])
        out = pd.DataFrame({f["name"]: as_display_strings(frame[f["name"]], f.get("value_map")) for f in fields})
        labels = frame[label_column]
        out[LABEL] = (
            _binary_labels(labels, label_column) if threshold is None else binarize(labels, threshold, label_column)
        )
        if time_column:
            out[time_column] = frame[time_column]
        return out

    specs = [FieldSpec(**{k: v for k, v in f.items() if k in SPEC_KEYS}) for f in fields]
    return Recipe(config.get("name", Path(schema_path).stem), specs, build, time_column=time_column)
