"""Hard prompts: a row of field values -> one sentence, plus the character span of every value.

    >>> t = PromptTemplate()
    >>> texts, spans = t.render(["user_id", "genre"], ["user id", "genre"], [["259"], ["Comedy"]])
    >>> texts[0]
    'user id is 259. genre is Comedy.'
    >>> spans[0].tolist()   # (F, 2) [start, end) of each value in the text
    [[11, 14], [25, 31]]

The spans are computed while the text is assembled (never by searching the text afterwards), so a value that also
appears in a field name or in another value is still located exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from .schema import normalize_values

VALUE_SLOT = "{value}"
NAME_SLOT = "{name}"


@dataclass
class PromptTemplate:
    """`"{name} is {value}"` per field, joined by `separator`, closed by `ending`.

    Args:
        pattern: default per-field pattern; must contain `{value}` once, `{name}` (display name) optionally.
        field_patterns: per-field overrides of `pattern`, keyed by field (column) name.
        separator: text between two fields.
        ending: text after the last field.
        missing_value: what an empty/None value renders as (its span covers this placeholder).
        hidden_fields: fields left out of the text (the ID model still reads them). With the raw IDs hidden
            (`["user_id", "movie_id", "zip_code"]` on MovieLens), contrastive alignment cannot be solved by matching
            the digits of an ID in both views; the text describes a movie by its title and genres instead.
    """

    pattern: str = "{name} is {value}"
    field_patterns: dict[str, str] = field(default_factory=dict)
    separator: str = ". "
    ending: str = "."
    missing_value: str = "unknown"
    hidden_fields: list[str] = field(default_factory=list)

    def __post_init__(self):
        for p in [self.pattern, *self.field_patterns.values()]:
            if p.count(VALUE_SLOT) != 1:
                raise ValueError(f"Prompt pattern {p!r} must contain {VALUE_SLOT} exactly once")

    def text_positions(self, field_names: Sequence[str]) -> list[int]:
        """Positions in `field_names` of the fields written into the text (all but `hidden_fields`)."""
        unknown = sorted(set(self.hidden_fields) - set(field_names))
        if unknown:
            raise ValueError(f"PromptTemplate.hidden_fields {unknown} are not schema fields {list(field_names)}")
        positions = [f for f, name in enumerate(field_names) if name not in self.hidden_fields]
        if not positions:
            raise ValueError("PromptTemplate.hidden_fields hides every field: the text needs at least one")
        return positions

    def pieces(self, field_names: Sequence[str], display_names: Sequence[str]) -> list[str]:
        """The F + 1 constant strings around the F values."""
        around = [
            self.field_patterns.get(name, self.pattern).replace(NAME_SLOT, display).split(VALUE_SLOT)
            for name, display in zip(field_names, display_names)
        ]
        pieces = [around[0][0]] if around else [""]
        pieces += [around[f - 1][1] + self.separator + around[f][0] for f in range(1, len(around))]
        return pieces + [(around[-1][1] if around else "") + self.ending]

    def render(
        self, field_names: Sequence[str], display_names: Sequence[str], columns: Sequence[Sequence[Any]]
    ) -> tuple[list[str], np.ndarray]:
        """Render N rows.

        Args:
            field_names: F column names (select per-field patterns).
            display_names: F names written into the text.
            columns: F columns of N values each (any type; normalised like the schema does).

        Returns:
            texts: N strings.
            spans: `(N, F, 2)` int64, `[start, end)` character span of each value in its text.
        """
        values = self.values(field_names, columns)
        n = len(values[0]) if values else 0
        pieces = self.pieces(field_names, display_names)
        lengths = np.zeros((n, len(values)), dtype=np.int64)
        for f, col in enumerate(values):
            lengths[:, f] = np.fromiter(map(len, col), dtype=np.int64, count=n)
        piece_lengths = np.array([len(p) for p in pieces[:-1]], dtype=np.int64)
        starts = np.cumsum(piece_lengths)[None, :] + np.cumsum(lengths, axis=1) - lengths
        spans = np.stack([starts, starts + lengths], axis=-1)
        parts = [repeat(pieces[0])]
        for col, piece in zip(values, pieces[1:]):
            parts += [col, repeat(piece)]
        texts = ["".join(row) for row in zip(*parts)] if values else [pieces[-1]] * n
        return texts, spans

    def values(self, field_names: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[list[str]]:
        """The F columns as the strings written into the text (normalised like the schema; empty -> missing)."""
        return [
            [v or self.missing_value for v in normalize_values(col, name)] for col, name in zip(columns, field_names)
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PromptTemplate:
        return cls(**(data or {}))
