"""`FlipProcessor`: tokenizer + tabular schema + prompt template -> FLIP model inputs.

Imports only stdlib, numpy, transformers and its relative siblings, so it ships as remote code
(`AutoProcessor.from_pretrained(dir, trust_remote_code=True)`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from itertools import chain, pairwise
from typing import Any

import numpy as np
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import cached_file, logging

from .prompts import PromptTemplate
from .schema import FIELD_MASK_ID, FIELD_OOV_ID, TabularSchema
from .spliced_tokens import SplicedBatch, SplicedTokenizer

SCHEMA_NAME = "flip_schema.json"

logger = logging.get_logger(__name__)

__all__ = [
    "FIELD_MASK_ID",
    "FIELD_OOV_ID",
    "SCHEMA_NAME",
    "FlipProcessor",
    "SchemaEncoder",
    "align_tokens_to_fields",
    "load_schema",
]


def _as_columns(rows: Any) -> dict[str, list]:
    """Dict of lists (a `datasets` batch), list of dicts, or a pandas DataFrame -> dict of lists."""
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # DataFrame, without importing pandas
        return {str(c): rows[c].tolist() for c in rows.columns}
    if isinstance(rows, Mapping) or hasattr(rows, "keys"):
        return {k: rows[k] for k in rows}
    rows = list(rows)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def align_tokens_to_fields(
    offsets: np.ndarray, row_ids: np.ndarray, spans: np.ndarray, texts: Sequence[str]
) -> np.ndarray:
    """Field index of every token, vectorised over a whole batch.

    A token belongs to field f when its character range overlaps the value span of f, after dropping one leading
    space from the range (byte-level BPE without `trim_offsets` puts the space before a word into the word's token).
    Special tokens have empty ranges and get -1, as do template words.

    Args:
        offsets: `(T, 2)` character `[start, end)` of all T tokens of the batch, rows concatenated.
        row_ids: `(T,)` row of each token.
        spans: `(N, F, 2)` value spans from `PromptTemplate.render`.
        texts: the N texts (only read at token starts, to detect a leading space).

    Returns:
        `(T,)` int64 field index or -1.
    """
    n, num_fields = spans.shape[:2]
    if len(offsets) == 0 or num_fields == 0:
        return np.full(len(offsets), -1, dtype=np.int64)
    starts, ends = offsets[:, 0], offsets[:, 1]
    row_char_base = np.concatenate([[0], np.cumsum([len(t) for t in texts])])
    codepoints = np.frombuffer("".join(texts).encode("utf-32-le") + b"\0\0\0\0", dtype=np.uint32)
    starts = starts + ((starts < ends) & (codepoints[row_char_base[row_ids] + starts] == ord(" ")))
    stride = int(max(spans.max(), ends.max())) + 1  # rows laid end to end on one axis
    base = row_ids * stride
    span_starts = (spans[..., 0] + np.arange(n)[:, None] * stride).ravel()
    span_ends = (spans[..., 1] + np.arange(n)[:, None] * stride).ravel()
    # first span (in row-major order) ending after the token's start; overlap if it also starts before the token ends
    candidate = np.searchsorted(span_ends, base + starts, side="right").clip(max=len(span_ends) - 1)
    hit = (starts < ends) & (span_starts[candidate] < base + ends) & (span_ends[candidate] > base + starts)
    hit &= candidate // num_fields == row_ids
    return np.where(hit, candidate % num_fields, -1).astype(np.int64)


class FlipProcessor(ProcessorMixin):
    """Rows of a CTR table -> `input_ids`, `attention_mask`, `token_field_index`, `field_ids` (+ `labels`).

    Args:
        tokenizer: any fast (`tokenizers`-backed) tokenizer: WordPiece, byte-level BPE, SentencePiece.
        schema: `TabularSchema` (or its dict), fitted on the train split; saved as `flip_schema.json`.
        prompt_template: `PromptTemplate` (or its dict). Its `hidden_fields` get no text and no token, but keep
            their `field_ids`; `token_field_index` always holds schema positions.
        max_length: truncation length in tokens, special tokens included.

    Example:
        >>> proc = FlipProcessor(tokenizer, schema, PromptTemplate(), max_length=128)
        >>> enc = proc({"user_id": ["259"], "genre": ["Comedy"], "label": [1]})
        >>> sorted(enc.keys())
        ['attention_mask', 'field_ids', 'input_ids', 'labels', 'token_field_index']

    Shapes (per row, lists of python ints unless `return_tensors` is set, which pads to the longest row):
    `input_ids`, `attention_mask`, `token_field_index` (L,) with -1 for template words / special tokens / padding;
    `field_ids` (F,) local ids; `labels` () 0/1 when the schema's label column is in the input.

    `self.stats` counts processed rows, truncated rows and truncated field values (cut partly or fully by
    `max_length`), cumulatively for this process; `self.schema.oov_counts` counts OOV values per field.

    With a BERT-style tokenizer each distinct field value is tokenised once per process and prompts are spliced
    from the cached tokens (exact, see `spliced_tokens`; ~Nx faster); `processor.splice_tokens = False` turns it off.
    """

    splice_tokens = True

    def __init__(self, tokenizer=None, schema=None, prompt_template=None, max_length=128, **kwargs):
        self.schema = (
            schema if isinstance(schema, TabularSchema) else TabularSchema.from_dict(schema or {"fields": []})
        )
        if isinstance(prompt_template, PromptTemplate):
            self.prompt_template = prompt_template
        else:
            self.prompt_template = PromptTemplate.from_dict(prompt_template)
        self.max_length = max_length
        self.stats = {"rows": 0, "truncated_rows": 0, "truncated_values": 0}
        super().__init__(tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "token_field_index", "field_ids"]

    @property
    def text_positions(self) -> np.ndarray:
        """`(F_text,)` schema positions of the fields written into the text (all but the template's hidden ones)."""
        return np.asarray(self.prompt_template.text_positions(self.schema.field_names), dtype=np.int64)

    @property
    def text_fields(self) -> tuple[list[str], list[str]]:
        """(column names, display names) of the fields written into the text, in schema order."""
        positions = self.text_positions.tolist()
        return [self.schema.field_names[f] for f in positions], [self.schema.display_names[f] for f in positions]

    def render(self, columns: Mapping[str, Sequence[Any]]) -> tuple[list[str], np.ndarray]:
        """Texts and `(N, F_text, 2)` value spans of the fields written into the text (`text_fields`)."""
        names, displays = self.text_fields
        return self.prompt_template.render(names, displays, [columns[name] for name in names])

    def __call__(self, rows: Any, return_tensors: str | None = None, return_truncation: bool = False) -> BatchFeature:
        """Encode a batch of rows (dict of lists, list of dicts or DataFrame).

        `return_truncation=True` adds `num_truncated_values` (N,): field values per row cut by `max_length`.
        """
        columns = _as_columns(rows) or {name: [] for name in self.schema.field_names}  # [] (no rows): empty batch
        missing = self.schema.missing_columns(columns)
        if missing:
            raise ValueError(f"FlipProcessor: input is missing the schema columns {missing} (has {list(columns)})")
        used = [*self.schema.field_names, *([self.schema.label_column] if self.schema.label_column in columns else [])]
        lengths = {name: len(columns[name]) for name in used}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"FlipProcessor: columns have different lengths {lengths} (one value per row each)")
        batch = self._tokenize(columns)
        self._count_rows(batch.truncated_values)
        bounds = np.concatenate([[0], np.cumsum(batch.lengths)]).tolist()
        text_field_index = batch.token_field_index  # (T,) positions among the text fields -> schema positions
        schema_field_index = np.where(text_field_index >= 0, self.text_positions[text_field_index.clip(min=0)], -1)
        input_ids, field_index = batch.input_ids.tolist(), schema_field_index.tolist()
        data = {
            "input_ids": [input_ids[a:b] for a, b in pairwise(bounds)],
            "attention_mask": [[1] * n for n in batch.lengths.tolist()],  # no padding: every token is real
            "token_field_index": [field_index[a:b] for a, b in pairwise(bounds)],
            "field_ids": self.schema.encode(columns).tolist(),
        }
        if return_truncation:
            data["num_truncated_values"] = batch.truncated_values.tolist()
        if self.schema.label_column in columns:
            data["labels"] = self.schema.labels(columns[self.schema.label_column]).tolist()
        if return_tensors is not None:
            return self._pad(data, return_tensors)
        return BatchFeature(data)

    def _tokenize(self, columns: Mapping[str, Sequence[Any]]) -> SplicedBatch:
        """Token ids, field index, lengths and truncated-value counts of the batch.

        Spliced from cached per-value tokens where that is exact for the tokenizer and template (`spliced_tokens`:
        BERT-style tokenizers with the default template), else by tokenising the full texts. The first batch of a
        spliced processor is also tokenised the full way and compared: any difference switches splicing off.
        """
        splicer = self._splicer() if self.splice_tokens else None
        if splicer is None:
            return self._tokenize_texts(columns)
        names, _ = self.text_fields
        batch = splicer.encode(self.prompt_template.values(names, [columns[name] for name in names]))
        if not self._splice_verified:
            reference = self._tokenize_texts(columns)
            if not all(np.array_equal(a, b) for a, b in zip(batch, reference)):
                logger.warning("FlipProcessor: spliced tokens differ from the full tokenisation; splicing is off")
                self.splice_tokens = False
                return reference
            self._splice_verified = True
        return batch

    def _tokenize_texts(self, columns: Mapping[str, Sequence[Any]]) -> SplicedBatch:
        """`_tokenize` by rendering the texts, tokenising them and aligning tokens to value spans by offsets."""
        texts, spans = self.render(columns)
        encodings = self._backend_tokenizer().encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        total = int(lengths.sum())
        input_ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        flat_offsets = chain.from_iterable(chain.from_iterable(e.offsets for e in encodings))
        offsets = np.fromiter(flat_offsets, dtype=np.int64, count=2 * total).reshape(-1, 2)
        row_ids = np.repeat(np.arange(len(texts)), lengths)
        field_index = align_tokens_to_fields(offsets, row_ids, spans, texts)
        return SplicedBatch(input_ids, field_index, lengths, self._truncated_values(encodings, spans, texts))

    def _backend_tokenizer(self):
        """The tokenizer's Rust backend, copied once with truncation at `max_length` and no padding.

        Calling it directly (same ids as `tokenizer(texts, truncation=True, max_length=...)`) skips the per-row
        Python conversion of `tokenizer.__call__`, which costs as much as the tokenisation itself here.
        """
        settings = (self.max_length, self.tokenizer.truncation_side)
        if getattr(self, "_backend", None) is None or self._backend[0] != settings:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise TypeError(f"FlipProcessor needs a tokenizers-backed tokenizer, got {type(self.tokenizer)}")
            backend = copy.deepcopy(backend)
            backend.no_padding()
            backend.enable_truncation(self.max_length, direction=self.tokenizer.truncation_side)
            self._backend = (settings, backend)
        return self._backend[1]

    def _splicer(self) -> SplicedTokenizer | None:
        """The `SplicedTokenizer` of the current tokenizer / template / max_length, or None where not exact."""
        pieces = self.prompt_template.pieces(*self.text_fields)
        settings = (self.max_length, self.tokenizer.truncation_side, tuple(pieces))
        if getattr(self, "_spliced", None) is None or self._spliced[0] != settings:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            splicer = backend and SplicedTokenizer.build(backend, pieces, self.max_length, settings[1])
            self._spliced, self._splice_verified = (settings, splicer), False
        return self._spliced[1]

    @staticmethod
    def _truncated_values(encodings: Sequence[Any], spans: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Values per row with at least one token dropped by truncation `(N,)`: the fields of the tokens in each
        encoding's `overflowing` parts (a value without any token, e.g. a lone control character, is never cut)."""
        dropped = [
            (row, offset)
            for row, encoding in enumerate(encodings)
            for part in encoding.overflowing
            for offset, special in zip(part.offsets, part.special_tokens_mask)
            if not special
        ]
        if not dropped or not spans.size:
            return np.zeros(len(encodings), dtype=np.int64)
        rows = np.array([row for row, _ in dropped], dtype=np.int64)
        fields = align_tokens_to_fields(np.array([offset for _, offset in dropped], np.int64), rows, spans, texts)
        num_fields = spans.shape[1]
        cut = np.unique(rows[fields >= 0] * num_fields + fields[fields >= 0])  # distinct (row, field) pairs
        return np.bincount(cut // num_fields, minlength=len(encodings)).astype(np.int64)

    def _count_rows(self, truncated: np.ndarray) -> None:
        """Add a batch's rows and truncations to `self.stats`."""
        self.stats["rows"] += len(truncated)
        self.stats["truncated_rows"] += int((truncated > 0).sum())
        self.stats["truncated_values"] += int(truncated.sum())

    def _pad(self, data: dict[str, list], return_tensors: str) -> BatchFeature:
        """Pad token-level lists to the longest row on the tokenizer's padding side and convert.

        Padding: `pad_token_id` in `input_ids`, 0 in `attention_mask`, -1 in `token_field_index`.
        """
        lengths = np.fromiter(map(len, data["input_ids"]), dtype=np.int64, count=len(data["input_ids"]))
        width = int(lengths.max()) if len(lengths) else 0
        positions = np.arange(width)[None, :]
        if self.tokenizer.padding_side == "left":
            real = positions >= (width - lengths)[:, None]
        else:
            real = positions < lengths[:, None]
        data = dict(data)
        for key, value in (
            ("input_ids", self.tokenizer.pad_token_id),
            ("attention_mask", 0),
            ("token_field_index", -1),
        ):
            padded = np.full((len(lengths), width), value, dtype=np.int64)
            padded[real] = np.fromiter(chain.from_iterable(data[key]), dtype=np.int64, count=int(lengths.sum()))
            data[key] = padded
        return BatchFeature(data, tensor_type=return_tensors)

    def check_compatible(self, config: Any) -> None:
        """Raise `ValueError` when a model config's `field_names` / `field_vocab_sizes` differ from the schema."""
        self.schema.check_compatible(config)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("schema", None)  # saved in its own file, SCHEMA_NAME
        output.pop("stats", None)
        for private in ("_backend", "_spliced", "_splice_verified", "splice_tokens"):
            output.pop(private, None)
        output["prompt_template"] = self.prompt_template.to_dict()
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        self.schema.save(os.path.join(save_directory, SCHEMA_NAME))
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load tokenizer + `processor_config.json`, then the schema from `flip_schema.json` (or `schema=`).

        The schema is attached after loading: passed through `ProcessorMixin.from_pretrained` it would also reach
        the tokenizer's `init_kwargs` and break the tokenizer's next `save_pretrained`.
        """
        schema = kwargs.pop("schema", None)
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if schema is None:
            hub_keys = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            schema = load_schema(pretrained_model_name_or_path, **{k: kwargs[k] for k in hub_keys if k in kwargs})
        processor.schema = schema if isinstance(schema, TabularSchema) else TabularSchema.from_dict(schema)
        return processor


class SchemaEncoder:
    """Tokenizer-free stand-in for `FlipProcessor` in `ctr_mode="id"`: rows -> `field_ids` (+ `labels` when the
    label column is present), from the schema alone. `tokenizer` is None (`DataCollatorForCTR(None,
    include_text=False)` batches its output).

    Example:
        >>> encoder = SchemaEncoder(load_schema("exported/flip-id"))
        >>> encoder({"user_id": ["196"], "movie_id": ["242"], ...})["field_ids"]   # [[local ids of row 0]]
    """

    tokenizer = None

    def __init__(self, schema: TabularSchema):
        self.schema = schema

    def __call__(self, rows: Any) -> BatchFeature:
        """Dict of lists, list of dicts or DataFrame -> `field_ids` (N, F) (and `labels` (N,)) as lists."""
        columns = _as_columns(rows)
        missing = self.schema.missing_columns(columns)
        if missing:
            raise ValueError(f"input is missing the schema columns {missing} (has {list(columns)})")
        data = {"field_ids": self.schema.encode(columns).tolist()}
        if self.schema.label_column in columns:
            data["labels"] = self.schema.labels(columns[self.schema.label_column]).tolist()
        return BatchFeature(data)


def load_schema(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> TabularSchema:
    """The fitted schema (`flip_schema.json`) saved with a model or processor (folder or Hub repo)."""
    path = cached_file(
        pretrained_model_name_or_path, SCHEMA_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if path is None:
        raise FileNotFoundError(
            f"{str(pretrained_model_name_or_path)!r} holds no {SCHEMA_NAME} (the fitted schema that `flip finetune`, "
            "`flip pretrain` and `flip prepare` save next to the model / processor)"
        )
    return TabularSchema.load(path)


def check_compatible(config_or_dict: Any, schema_or_processor: TabularSchema | FlipProcessor) -> None:
    """Raise a `ValueError` naming the difference when a model config does not fit the data schema."""
    schema = getattr(schema_or_processor, "schema", schema_or_processor)
    schema.check_compatible(config_or_dict)
