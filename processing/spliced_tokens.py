"""Prompt token ids spliced from per-value token ids: each distinct field value is tokenised once per process.

A BERT-style tokenizer (WordPiece model, `BertPreTokenizer`, `BertNormalizer`) normalises character by character
and splits the text at every whitespace and punctuation character before WordPiece sees it. When every boundary
between a template piece and a value touches such a character (`"... is {value}. ..."`: a space before, a period
after), the tokens of the whole prompt are exactly the tokens of its pieces, concatenated:

    [CLS] tok("user id is") tok("259") tok(". genre is") tok("Comedy") tok(".") [SEP]

so a row costs a few dictionary lookups and array gathers instead of a tokenizer call. Other tokenizers
(byte-level BPE puts the space before a word into the word's token; SentencePiece marks word starts) are not
spliced: `SplicedTokenizer.build` returns None and the processor tokenises full texts.

Imports only numpy and `tokenizers` (ships as remote code with the processor).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

MAX_CACHED_VALUES = 2_000_000  # the cache starts over before a batch that could take it past this (hashed fields)


class SplicedBatch(NamedTuple):
    """Token ids of N rows laid end to end, as the processor's full-text path produces them."""

    input_ids: np.ndarray  # (T,) int64, special tokens included
    token_field_index: np.ndarray  # (T,) int64 field of each token, -1 for template words and special tokens
    lengths: np.ndarray  # (N,) int64 tokens per row
    truncated_values: np.ndarray  # (N,) int64 values per row with tokens cut (partly or fully) by max_length


def is_split_character(char: str) -> bool:
    """True where `BertPreTokenizer` always splits: whitespace or punctuation (BERT's definitions)."""
    if char in " \t\n\r" or unicodedata.category(char) == "Zs":
        return True
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def pieces_are_splittable(pieces: Sequence[str]) -> bool:
    """True when every piece/value boundary of the F + 1 template `pieces` touches a split character.

    The text starts with `pieces[0]` and ends with `pieces[-1]` (text edges split by themselves); the pieces between
    two values must be non-empty (two values side by side could merge into one word).
    """
    inner = pieces[1:-1]
    if any(not piece for piece in inner):
        return False
    checks = [pieces[0][-1:]] + [c for piece in inner for c in (piece[0], piece[-1])] + [pieces[-1][:1]]
    return all(is_split_character(char) for char in checks if char)


def is_bert_style(backend: Tokenizer) -> bool:
    """WordPiece model, `BertPreTokenizer`, and a per-character normaliser (`BertNormalizer` or none)."""
    normalizer_ok = backend.normalizer is None or isinstance(backend.normalizer, normalizers.BertNormalizer)
    return (
        isinstance(backend.model, WordPiece)
        and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
        and normalizer_ok
    )


class SplicedTokenizer:
    """Tokenises prompts of a fixed template by splicing cached token ids (see the module docstring).

    Args:
        backend: a Rust tokenizer without truncation and padding (`build` makes one from the tokenizer's backend).
        pieces: the F + 1 constant strings around the F values (`PromptTemplate.pieces`).
        max_length: truncation length in tokens, special tokens included (right-side truncation).
        prefix, suffix: special token ids the post-processor puts around a single sequence.
    """

    def __init__(self, backend: Tokenizer, pieces: Sequence[str], max_length: int, prefix: list, suffix: list):
        self.backend = backend
        self.max_content = max_length - len(prefix) - len(suffix)
        self.prefix = np.asarray(prefix, dtype=np.int64)
        self.suffix = np.asarray(suffix, dtype=np.int64)
        self.template_pieces = list(pieces)
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.cache: dict[str, int] = {}  # value -> entry
        self.token_pool = np.zeros(0, dtype=np.int64)  # every cached token sequence, laid end to end
        self.starts = np.zeros(0, dtype=np.int64)  # entry -> start in token_pool
        self.lengths = np.zeros(0, dtype=np.int64)  # entry -> token count
        self.piece_entries = self._entries(self.template_pieces)

    @classmethod
    def build(
        cls, backend: Tokenizer, pieces: Sequence[str], max_length: int, truncation_side: str = "right"
    ) -> SplicedTokenizer | None:
        """A `SplicedTokenizer` when splicing is exact for this tokenizer and template, else None. `backend` is
        not modified."""
        if truncation_side != "right" or not is_bert_style(backend) or not pieces_are_splittable(pieces):
            return None
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
        probe = "a"
        with_special = backend.encode(probe, add_special_tokens=True).ids
        content = backend.encode(probe, add_special_tokens=False).ids
        starts = [i for i in range(len(with_special)) if with_special[i : i + len(content)] == content]
        if len(content) != 1 or not starts:
            return None
        prefix, suffix = with_special[: starts[0]], with_special[starts[0] + len(content) :]
        if max_length <= len(prefix) + len(suffix):
            return None
        return cls(backend, pieces, max_length, prefix, suffix)

    def _entries(self, values: Sequence[str]) -> np.ndarray:
        """Cache entry of each value `(len(values),)`, tokenising the values not seen before (once each)."""
        new = list(dict.fromkeys(v for v in values if v not in self.cache))
        if new:
            token_lists = [e.ids for e in self.backend.encode_batch(new, add_special_tokens=False)]
            new_lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(new))
            flat = np.fromiter((t for ids in token_lists for t in ids), dtype=np.int64, count=int(new_lengths.sum()))
            self.starts = np.concatenate([self.starts, len(self.token_pool) + np.cumsum(new_lengths) - new_lengths])
            self.lengths = np.concatenate([self.lengths, new_lengths])
            self.token_pool = np.concatenate([self.token_pool, flat])
            self.cache.update(zip(new, range(len(self.cache), len(self.cache) + len(new))))
        return np.fromiter(map(self.cache.__getitem__, values), dtype=np.int64, count=len(values))

    def encode(self, values: Sequence[Sequence[str]]) -> SplicedBatch:
        """Token ids of N prompts from F columns of N rendered values (`PromptTemplate.values`)."""
        num_fields = len(values)
        n = len(values[0]) if num_fields else 0
        if len(self.cache) + n * num_fields > MAX_CACHED_VALUES:  # at most this many new values: start over
            self._reset_cache()
        # segments of a row: piece 0, value 0, piece 1, ..., value F-1, piece F  -> (N, 2F + 1) cache entries
        entries = np.empty((n, 2 * num_fields + 1), dtype=np.int64)
        entries[:, 0::2] = self.piece_entries
        for f, column in enumerate(values):
            entries[:, 2 * f + 1] = self._entries(column)
        segment_lengths = self.lengths[entries]  # (N, S)
        segment_ends = np.cumsum(segment_lengths, axis=1)  # (N, S) content position after each segment
        kept = np.minimum(segment_ends[:, -1], self.max_content)  # (N,) content tokens kept
        # every content token of the batch: the segment it comes from, its position in the row
        flat_lengths = segment_lengths.ravel()
        token_segment = np.repeat(np.arange(flat_lengths.size), flat_lengths)  # (T_all,)
        segment_offsets = np.cumsum(flat_lengths) - flat_lengths
        within_segment = np.arange(token_segment.size) - segment_offsets[token_segment]
        row = token_segment // entries.shape[1]
        position = (segment_ends.ravel() - flat_lengths)[token_segment] + within_segment
        keep = position < kept[row]
        content_ids = self.token_pool[self.starts[entries.ravel()][token_segment] + within_segment][keep]
        segment_field = np.where(np.arange(entries.shape[1]) % 2 == 1, np.arange(entries.shape[1]) // 2, -1)
        content_fields = segment_field[token_segment % entries.shape[1]][keep]
        return self._with_special_tokens(content_ids, content_fields, row[keep], kept, segment_ends)

    def _with_special_tokens(
        self, ids: np.ndarray, fields: np.ndarray, rows: np.ndarray, kept: np.ndarray, segment_ends: np.ndarray
    ) -> SplicedBatch:
        """Insert the prefix / suffix special tokens around each row's kept content tokens."""
        num_prefix, num_suffix = len(self.prefix), len(self.suffix)
        lengths = kept + num_prefix + num_suffix
        row_starts = np.cumsum(lengths) - lengths
        content_positions = row_starts[rows] + num_prefix + (np.arange(len(ids)) - (np.cumsum(kept) - kept)[rows])
        input_ids = np.empty(int(lengths.sum()), dtype=np.int64)
        field_index = np.full(len(input_ids), -1, dtype=np.int64)
        input_ids[content_positions], field_index[content_positions] = ids, fields
        for offset, token in enumerate(self.prefix):
            input_ids[row_starts + offset] = token
        for offset, token in enumerate(self.suffix):
            input_ids[row_starts + num_prefix + kept + offset] = token
        value_ends = segment_ends[:, 1:-1:2]  # (N, F) content position after each value
        value_starts = segment_ends[:, 0:-1:2]
        truncated = (value_ends > kept[:, None]) & (value_ends > value_starts)  # a token of the value was dropped
        return SplicedBatch(input_ids, field_index, lengths, truncated.sum(1).astype(np.int64))
