"""Declarative tabular schema: one `FieldSpec` per categorical field, vocabularies fitted on train.

Every field has its own local vocabulary (see docs/contracts.md):

- local id `FIELD_MASK_ID = 0` is the field's [MASK], `FIELD_OOV_ID = 1` its OOV (unseen, missing or empty value);
- values seen in train get ids `2 .. vocab_size - 1`, by descending train count, ties by string value;
- with `num_buckets=n` a value maps to `2 + crc32(value) % n` (stable across processes and runs).

Values are compared as strings: `21`, `21.0` and `" 21 "` all become `"21"`; `None`, NaN and `""` are missing.
Only stdlib and numpy are imported, so the file can ship as remote code next to `processing_flip.py`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

FIELD_MASK_ID = 0
FIELD_OOV_ID = 1
NUM_RESERVED_IDS = 2
SCHEMA_FORMAT_VERSION = 1


MISSING_TYPE_NAMES = {"NAType", "NaTType"}  # pandas.NA, pandas.NaT (without importing pandas)
NESTED_TYPES = (list, tuple, dict, set, frozenset, np.ndarray)


def _value_to_str(value: Any, name: str | None = None) -> str:
    """Canonical string of one cell; `""` means missing (None, NaN, pandas NA/NaT, datetime NaT, empty).

    Bytes are decoded as UTF-8; nested values (lists, dicts, arrays) raise `TypeError` naming the field `name`:
    their `str()` would silently become a category.
    """
    if value is None or type(value).__name__ in MISSING_TYPE_NAMES:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raise ValueError(f"Field {name!r}: bytes value {bytes(value)[:20]!r} is not UTF-8 ({error})") from None
    if isinstance(value, NESTED_TYPES):
        raise TypeError(
            f"Field {name!r}: got a {type(value).__name__} value {str(value)[:50]!r}; a field holds one scalar "
            "(string or number) per row: flatten or join the column first"
        )
    if isinstance(value, np.datetime64) and np.isnat(value):
        return ""
    return str(value).strip()


def normalize_values(values: Iterable[Any], name: str | None = None) -> list[str]:
    """Canonical strings of a column (`""` = missing). Already-clean strings take a C-level fast path.

    `name` (the field) only appears in the error raised for nested values (see `_value_to_str`).
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        return values.astype(str).tolist()
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v.strip() if type(v) is str else _value_to_str(v, name) for v in values]


OOV_WARNING_SHARE = 0.25  # above this share of unseen-or-missing values a field gets a warning


def describe_oov(shares: Mapping[str, float], warn_above: float = OOV_WARNING_SHARE) -> tuple[str, list[str]]:
    """(one line: each field's share of values unseen in train or missing, which all map to the field's OOV id;
    a warning line per field whose share is above `warn_above`)."""
    line = ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
    warnings = [
        f"warning: {share:.0%} of the {name!r} values are unseen in train or missing (one OOV id for all of them): "
        "check the column, or that the rows come from the same population as the training data"
        for name, share in shares.items()
        if share > warn_above
    ]
    return line, warnings


def _label_number(value: str) -> float:
    """`"1"` -> 1.0, `"true"` / `"false"` (booleans) -> 1.0 / 0.0; NaN for text and for `""` (missing)."""
    boolean = {"true": 1.0, "false": 0.0}.get(value.lower())
    if boolean is not None:
        return boolean
    try:
        return float(value)
    except ValueError:
        return math.nan


def _label_numbers(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(`(N,)` float labels, NaN where missing or text; `(N,)` bool mask of the text values)."""
    try:  # numbers, numeric strings, booleans; None -> NaN
        numbers = np.asarray(values, dtype=np.float64).reshape(-1)
        return numbers, np.zeros(len(numbers), dtype=bool)
    except (TypeError, ValueError):
        strings = normalize_values(values)
        numbers = np.fromiter(map(_label_number, strings), dtype=np.float64, count=len(strings))
        return numbers, np.isnan(numbers) & (np.asarray(strings, dtype=object) != "")


def stable_hash(value: str) -> int:
    """Process-independent hash (CRC32 of the UTF-8 bytes), unlike Python's salted `hash`."""
    return zlib.crc32(value.encode("utf-8"))


@dataclass
class FieldSpec:
    """One categorical field.

    Args:
        name: column name in the data.
        display_name: words naming the field in the prompt (default: `name` with `_` -> space).
        vocab: train values in id order (id of `vocab[i]` is `i + 2`); filled by `TabularSchema.fit`.
        counts: train count of each vocab entry (or of each hash bucket when `num_buckets` is set).
        num_buckets: hash values into this many buckets instead of keeping a vocabulary.
        min_count: train values seen fewer times than this map to OOV.
    """

    name: str
    display_name: str | None = None
    vocab: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    num_buckets: int | None = None
    min_count: int = 1

    def __post_init__(self):
        if self.display_name is None:
            self.display_name = self.name.replace("_", " ")
        for key, value in (("num_buckets", self.num_buckets), ("min_count", self.min_count)):
            if (value is not None or key == "min_count") and not (
                isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            ):
                raise ValueError(f"Field {self.name!r}: {key} must be a positive integer, got {value!r}")
        self._index: dict[str, int] | None = None

    @property
    def vocab_size(self) -> int:
        """Number of local ids, the two reserved ones included."""
        return NUM_RESERVED_IDS + (self.num_buckets if self.num_buckets else len(self.vocab))

    def fit(self, values: Iterable[Any]) -> FieldSpec:
        """Count train values; keeps `vocab`/`counts` ordered by (-count, value). Missing values are not counted.

        With `num_buckets` only the bucket counts are kept, computed without a table of distinct values, so memory
        stays O(rows + num_buckets) however many distinct values the field has.
        """
        if self.num_buckets:
            ids = self.encode(values)
            self.vocab = []
            self.counts = np.bincount(ids[ids >= NUM_RESERVED_IDS] - NUM_RESERVED_IDS, minlength=self.num_buckets)
            self.counts = self.counts.tolist()
        else:
            counter = Counter(normalize_values(values, self.name))
            counter.pop("", None)
            kept = sorted((item for item in counter.items() if item[1] >= self.min_count), key=lambda x: (-x[1], x[0]))
            self.vocab, self.counts = [v for v, _ in kept], [c for _, c in kept]
        self._index = None
        return self

    def encode(self, values: Iterable[Any]) -> np.ndarray:
        """Values -> local ids `(N,)` int64; unseen, missing and empty values -> `FIELD_OOV_ID`."""
        strings = normalize_values(values, self.name)
        if self.num_buckets:
            ids = [NUM_RESERVED_IDS + stable_hash(v) % self.num_buckets if v else FIELD_OOV_ID for v in strings]
            return np.asarray(ids, dtype=np.int64).reshape(len(strings))
        if self._index is None:
            self._index = {value: i + NUM_RESERVED_IDS for i, value in enumerate(self.vocab)}
        return np.fromiter(map(self._index.get, strings, repeat(FIELD_OOV_ID)), dtype=np.int64, count=len(strings))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TabularSchema:
    """Ordered fields plus the label and time columns of a CTR table.

    Args:
        fields: the categorical fields, in model-input order.
        label_column: column holding the click/rating; `None` for unlabelled data.
        label_threshold: label = 1 when value >= threshold (ratings).
        time_column: column used for the time-ordered split (kept in the data, not a model input).
        positive_labels: values of a text label column that mean a click (`["yes"]`, `["true"]`, `["clicked"]`);
            every other value is a non-click. Without it or `label_threshold` the column must hold 0/1.
    """

    fields: list[FieldSpec]
    label_column: str | None = "label"
    label_threshold: float | None = None
    time_column: str | None = None
    positive_labels: list[str] | None = None

    def __post_init__(self):
        self.fields = [f if isinstance(f, FieldSpec) else FieldSpec(**f) for f in self.fields]
        names = self.field_names
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate field names in schema: {names}")
        self.oov_counts: Counter[str] = Counter()

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def display_names(self) -> list[str]:
        return [f.display_name for f in self.fields]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def field_vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.fields]

    @property
    def offsets(self) -> list[int]:
        """`offsets[f] = sum(field_vocab_sizes[:f])`: where field f starts in the shared embedding table."""
        return np.concatenate([[0], np.cumsum(self.field_vocab_sizes)[:-1]]).astype(int).tolist()

    def missing_columns(self, columns: Iterable[str]) -> list[str]:
        present = set(columns)
        return [name for name in self.field_names if name not in present]

    def fit(self, table: Mapping[str, Sequence[Any]]) -> TabularSchema:
        """Fit every field's vocabulary on `table` (the **train** split: dict of lists, DataFrame, Dataset)."""
        missing = self.missing_columns(table.keys() if hasattr(table, "keys") else table.column_names)
        if missing:
            raise ValueError(f"Cannot fit schema: missing columns {missing}")
        for spec in self.fields:
            spec.fit(table[spec.name])
        return self

    def oov_shares(self, rows: int) -> dict[str, float]:
        """Per field, the share of the values encoded so far (`rows` rows) that were unseen or missing."""
        return {name: self.oov_counts.get(name, 0) / max(rows, 1) for name in self.field_names}

    def encode(self, table: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Columns -> local field ids `(N, F)` int64. OOV hits are added to `self.oov_counts` per field."""
        columns = [self.fields[f].encode(table[name]) for f, name in enumerate(self.field_names)]
        ids = np.stack(columns, axis=1) if columns else np.zeros((0, 0), dtype=np.int64)
        self.oov_counts.update({name: int(n) for name, n in zip(self.field_names, (ids == FIELD_OOV_ID).sum(0)) if n})
        return ids

    def labels(self, values: Sequence[Any]) -> np.ndarray:
        """Label column -> `(N,)` int64 0/1, by `positive_labels`, else `label_threshold`, else as 0/1 numbers.

        Raises `ValueError` naming the column, the problem, an example and the first row numbers (0-based) on
        missing values (None, NaN, empty), text without `positive_labels`, and values other than 0/1 without
        `label_threshold`.
        """
        if self.positive_labels is not None:
            strings = np.asarray(normalize_values(values, self.label_column), dtype=object)
            self._check_labels(strings == "", values, "NaN or missing")
            return np.isin(strings, normalize_values(self.positive_labels)).astype(np.int64)
        numbers, text = _label_numbers(values)
        hint = "; for text labels list the values that mean a click in positive_labels, e.g. positive_labels: [{}]"
        self._check_labels(text, values, "not numbers", hint)
        self._check_labels(np.isnan(numbers), values, "NaN or missing")
        if self.label_threshold is not None:
            return (numbers >= self.label_threshold).astype(np.int64)
        hint = "; set label_threshold to binarise ratings (label = value >= threshold)"
        self._check_labels(~np.isin(numbers, (0.0, 1.0)), values, "not 0/1", hint)
        return numbers.astype(np.int64)

    def _check_labels(self, bad: np.ndarray, values: Sequence[Any], problem: str, hint: str = "") -> None:
        """`ValueError` when any label is `bad`: count, problem, an example, the first row numbers and `hint`
        (`{}` in it becomes the example)."""
        if not bad.any():
            return
        rows = np.flatnonzero(bad)
        example = np.asarray(values, dtype=object)[rows[0]]
        raise ValueError(
            f"Label column {self.label_column!r}: {len(rows)} of {len(bad)} rows are {problem} "
            f"(e.g. {example!r} in rows {rows[:5].tolist()}, 0-based){hint.format(repr(example))}"
        )

    def feature_counts(self) -> list[int]:
        """Train counts in global order (offset + local id), length `sum(field_vocab_sizes)`; reserved ids count 0."""
        return [c for spec in self.fields for c in [0] * NUM_RESERVED_IDS + list(spec.counts)]

    def check_compatible(self, config: Any) -> None:
        """Raise `ValueError` naming the difference when a model config (object or dict) expects other fields.

        Checks `field_names` and `field_vocab_sizes`, whichever the config defines.
        """
        get = config.get if isinstance(config, Mapping) else lambda key, default=None: getattr(config, key, default)
        problems = []
        for key, ours in (("field_names", self.field_names), ("field_vocab_sizes", self.field_vocab_sizes)):
            theirs = get(key, None)
            if theirs is not None and list(theirs) != list(ours):
                diff = [(i, a, b) for i, (a, b) in enumerate(zip(theirs, ours)) if a != b]
                detail = (
                    f"lengths {len(theirs)} vs {len(ours)}"
                    if len(theirs) != len(ours)
                    else f"(index, model, data) {diff[:5]}"
                )
                problems.append(f"{key}: model has {list(theirs)}, data schema has {list(ours)}; {detail}")
        if problems:
            raise ValueError("Model config and data schema disagree: " + " | ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SCHEMA_FORMAT_VERSION,
            "fields": [spec.to_dict() for spec in self.fields],
            "label_column": self.label_column,
            "label_threshold": self.label_threshold,
            "time_column": self.time_column,
            "positive_labels": self.positive_labels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularSchema:
        data = dict(data)
        data.pop("format_version", None)
        return cls(**data)

    def save(self, path: str) -> None:
        """Write JSON; fields stay a list so their order survives any key sorting (hf_ecosystem P8)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> TabularSchema:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
