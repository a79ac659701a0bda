"""What every dataset recipe shares: the time-ordered 80/10/10 split (or a seeded random one) and the DatasetDict
layout.

A recipe parses raw files into one pandas DataFrame with one display-ready string column per field (missing values
as None), an int `label` column (0/1) and, when the data has one, the raw time column, with rows already in split
order (`sort_for_split`: time, then raw user/item ids as ties, stable). `split_by_time` cuts it into train /
validation / test (PROTOCOL.md); `split_randomly` is the second view PROTOCOL.md reports beside it (a seeded random
80/10/10 split of rows, as BARS / FuxiCTR split MovieLens).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from ..schema import NESTED_TYPES, FieldSpec, TabularSchema, normalize_values

LABEL = "label"
SCALAR_KINDS = {"string", "empty", "integer", "floating", "mixed-integer-float", "decimal", "boolean", "bytes"}
SPLITS = ("train", "validation", "test")
SPLIT_METHODS = ("time", "random")


def as_display_strings(column: pd.Series, value_map: Mapping[str, str] | None = None) -> pd.Series:
    """Column -> object Series of stripped strings (ints/floats like 21.0 -> "21", as `normalize_values` does for
    the processor's raw rows), None where missing or empty. Nested values (lists, dicts, arrays) raise `TypeError`
    naming the column: their text would silently become a category."""
    series = pd.Series(column, copy=False)
    if pd.api.types.is_float_dtype(series):
        if np.all(np.isnan(series) | (series == np.round(series))):
            series = series.astype("Int64")
        else:  # mixed 1.5 / 2.0: per value, so 2.0 -> "2" like the processor
            series = pd.Series(normalize_values(series.to_numpy()), index=series.index, dtype=object)
    elif series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) not in SCALAR_KINDS:
        nested = series.map(lambda v: isinstance(v, NESTED_TYPES))
        if nested.any():
            example = series[nested].iloc[0]
            raise TypeError(
                f"Column {series.name!r}: {int(nested.sum())} of {len(series)} values are {type(example).__name__}s "
                f"(e.g. {str(example)[:50]!r}); a field holds one scalar per row: flatten or join the column first"
            )
    strings = series.astype("string").str.strip()
    if value_map:
        strings = strings.replace(dict(value_map))
    return strings.astype(object).where(strings.fillna("").ne(""), None)


def sort_for_split(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Stable sort on raw values (numeric ids sort as numbers; do it before `as_display_strings`)."""
    return frame.sort_values(list(keys), kind="stable").reset_index(drop=True) if keys else frame


def split_by_time(
    frame: pd.DataFrame, time_column: str | None, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, pd.DataFrame]:
    """Cut into consecutive train/validation/test blocks after a stable sort on time (file order without time)."""
    ordered = sort_for_split(frame, [time_column] if time_column else []).reset_index(drop=True)
    bounds = split_bounds(len(ordered), fractions)
    return {name: ordered.iloc[a:b] for name, a, b in zip(SPLITS, bounds[:-1], bounds[1:])}


def split_randomly(
    frame: pd.DataFrame, seed: int, time_column: str | None, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, pd.DataFrame]:
    """Cut a seeded random permutation of the rows into train/validation/test blocks of the same sizes as
    `split_by_time`; each block keeps the time order (so "the oldest train rows" still means something)."""
    ordered = sort_for_split(frame, [time_column] if time_column else []).reset_index(drop=True)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    bounds = split_bounds(len(ordered), fractions)
    return {name: ordered.iloc[np.sort(permutation[a:b])] for name, a, b in zip(SPLITS, bounds[:-1], bounds[1:])}


def split_bounds(num_rows: int, fractions: Sequence[float]) -> np.ndarray:
    """Row offsets `[0, end of train, end of validation, num_rows]` of an 80/10/10 (`fractions`) cut."""
    return np.floor(np.cumsum([0.0, *fractions]) / sum(fractions) * num_rows + 1e-9).astype(int)


@dataclass
class Recipe:
    """A named dataset: its fields, how to build its table, its time column and its label rules.

    `fields` are (column, display name) pairs or `FieldSpec`s (for hashing / min_count options).
    `build(cache_dir=..., **kwargs)` returns the full DataFrame (fields as display strings, the label column, time
    column) in split order. The label column holds 0/1 (`label` of the built-in recipes) or, for a table schema file,
    the raw values that `label_threshold` / `positive_labels` map to 0/1 (the processor applies the same rules to the
    user's own tables later).
    """

    name: str
    fields: list[tuple[str, str] | FieldSpec]
    build: Callable[..., pd.DataFrame]
    time_column: str | None = "timestamp"
    label_column: str = LABEL
    label_threshold: float | None = None
    positive_labels: list[str] | None = None
    source_files: list[str] = field(default_factory=list)  # local files the table is read from (cache keys)

    def __post_init__(self):
        self.fields = [f if isinstance(f, FieldSpec) else FieldSpec(*f) for f in self.fields]

    @property
    def field_names(self) -> list[str]:
        return [spec.name for spec in self.fields]

    def schema(self) -> TabularSchema:
        """A fresh (unfitted) schema of the recipe's output; fit it on the train split."""
        specs = [FieldSpec(**spec.to_dict()) for spec in self.fields]
        return TabularSchema(
            specs,
            label_column=self.label_column,
            label_threshold=self.label_threshold,
            time_column=self.time_column,
            positive_labels=self.positive_labels,
        )

    def load(
        self, cache_dir: str | None = None, split: str = "time", split_seed: int = 0, **kwargs: Any
    ) -> DatasetDict:
        """The train / validation / test splits: `split="time"` (PROTOCOL.md's), or `"random"` (seeded by
        `split_seed`); `kwargs` go to `build`."""
        if split not in SPLIT_METHODS:
            raise ValueError(f"split={split!r} is not one of {SPLIT_METHODS}")
        frame = self.build(cache_dir=cache_dir, **kwargs)
        if split == "time":
            splits = split_by_time(frame, self.time_column)
        else:
            splits = split_randomly(frame, split_seed, self.time_column)
        if splits["train"].empty:
            raise ValueError(
                f"Dataset {self.name!r}: the train split is empty ({len(frame)} rows in all); "
                "the vocabularies are fitted on train, so the table needs rows"
            )
        return to_dataset_dict(splits, self)


def to_dataset_dict(splits: Mapping[str, pd.DataFrame], recipe: Recipe) -> DatasetDict:
    """Keep the field, label and time columns (in that order) of each split."""
    columns = [*recipe.field_names, recipe.label_column, *([recipe.time_column] if recipe.time_column else [])]
    return DatasetDict(
        {name: Dataset.from_pandas(part[columns], preserve_index=False) for name, part in splits.items()}
    )
