"""ONNX Runtime serving of FLIP_ID (`flip export-onnx`): raw rows -> field ids (the schema) -> logit -> probability.

No torch, transformers or tokenizer: numpy and onnxruntime only (huggingface_hub too, to load by Hub repo id). The file
ships in every exported folder next to `tabular_schema.py` (a copy of `processing/schema.py`), so the folder is a
self-contained serving artefact:

    import sys; sys.path.insert(0, "exported/flip-id-onnx")   # or, with the package: from processing.onnx_serving ...
    from onnx_serving import ORTFlipForCTR

    model = ORTFlipForCTR.from_pretrained("exported/flip-id-onnx")  # a folder, or a Hub repo id (cache, offline too)
    model.predict({"user_id": ["196"], "movie_id": ["242"], ...})   # click probabilities (N,), every schema field
    model(field_ids)                                                 # logits (B,) of local ids (B, F), range-checked

The graph computes `field_ids (B, F) int64 -> logits (B,) float32` with a dynamic batch axis. Ids are local per field
(`0 .. field_vocab_sizes[f] - 1`); an id outside its field's range would silently read another field's embedding row
in the shared table, so `__call__` rejects it (and a wrong number of fields) with a `ValueError` first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:  # inside the package
    from .schema import TabularSchema
except ImportError:  # the copy in an exported folder, next to its tabular_schema.py
    from tabular_schema import TabularSchema

ONNX_NAME = "model.onnx"
CONFIG_NAME = "config.json"
SCHEMA_NAME = "flip_schema.json"
INPUT_NAME, OUTPUT_NAME = "field_ids", "logits"
SERVING_FILES = (ONNX_NAME, "*.json", "*.py", "*.md")  # what `from_pretrained` fetches from a Hub repo
INSTALL_HINT = "pip install 'flip-ctr[onnx]' (or: pip install onnxruntime)"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64 `(N,)`."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


def _is_column(value: Any) -> bool:
    """A column of values (list, tuple, array, Series), as opposed to one value (string, number, None)."""
    return isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0


def inference_session(path: str, threads: int | None = None, providers: Sequence[str] | None = None):
    """An `onnxruntime.InferenceSession` of `path`; `threads` sets the intra-op threads (default: ORT's choice)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"ONNX serving needs onnxruntime: {INSTALL_HINT}") from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    providers = list(providers or onnxruntime.get_available_providers())
    return onnxruntime.InferenceSession(path, options, providers=providers)


def resolve_folder(name_or_path: str, **hub_kwargs) -> str:
    """A local folder, or the Hub snapshot of repo `name_or_path` (`huggingface_hub.snapshot_download`: served from
    the cache under `HF_HUB_OFFLINE=1`); `hub_kwargs` go to `snapshot_download` (revision, cache_dir, token, ...)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path, allow_patterns=list(SERVING_FILES), **hub_kwargs)


class ORTFlipForCTR:
    """FLIP_ID on ONNX Runtime: the exported graph + the schema that encodes rows (see the module docstring).

    Args:
        session: `onnxruntime.InferenceSession` of the exported `model.onnx`.
        schema: the model's `TabularSchema` (`flip_schema.json`).
        config: the exported FLIP_ID config (`config.json` as a dict); its fields must match the schema.
    """

    def __init__(self, session: Any, schema: TabularSchema, config: Mapping[str, Any]):
        schema.check_compatible(config)
        self.session, self.schema, self.config = session, schema, dict(config)
        self.vocab_sizes = np.asarray(schema.field_vocab_sizes, dtype=np.int64)  # (F,)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, threads: int | None = None, providers: Sequence[str] | None = None, **hub_kwargs
    ) -> ORTFlipForCTR:
        """Load a `flip export-onnx` folder or Hub repo id (`hub_kwargs`: see `resolve_folder`)."""
        folder = resolve_folder(name_or_path, **hub_kwargs)
        if not os.path.isfile(os.path.join(folder, ONNX_NAME)):
            raise FileNotFoundError(
                f"{name_or_path!r} holds no {ONNX_NAME}: write one with `flip export-onnx MODEL_DIR OUT_DIR` "
                "(MODEL_DIR: a finetuned FLIP_ID or FLIP model)"
            )
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as handle:
            config = json.load(handle)
        schema = TabularSchema.load(os.path.join(folder, SCHEMA_NAME))
        return cls(inference_session(os.path.join(folder, ONNX_NAME), threads, providers), schema, config)

    def check_field_ids(self, field_ids: Any) -> np.ndarray:
        """`field_ids` as int64 `(B, F)`, or a `ValueError` / `TypeError` saying what is wrong with the batch."""
        ids = np.asarray(field_ids)
        names = self.schema.field_names
        if ids.ndim != 2 or ids.shape[1] != len(names):
            raise ValueError(
                f"field_ids must have shape (batch, {len(names)}): one local id per field of {names}; got shape "
                f"{ids.shape}"
            )
        if ids.dtype.kind not in "iu":
            raise TypeError(f"field_ids must hold integer ids, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_sizes)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise ValueError(
                f"field_ids out of range at {int(bad.sum())} position(s); first: row {row}, field {names[column]!r} "
                f"has id {ids[row, column]}, valid ids are 0..{self.vocab_sizes[column] - 1}. Encode rows with this "
                "model's schema (`encode` / `predict`)"
            )
        return ids.astype(np.int64, copy=False)

    def __call__(self, field_ids: Any) -> np.ndarray:
        """Logits `(B,)` float32 of local field ids `(B, F)` (numpy array, nested lists or a CPU tensor)."""
        ids = self.check_field_ids(field_ids)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: ids})[0]

    def encode(self, rows: Mapping[str, Any]) -> np.ndarray:
        """Local field ids `(N, F)` of a DataFrame, a dict of columns (lists, tuples, arrays) or one row (a dict of
        scalars); other columns are ignored, unseen and missing values map to the field's OOV id."""
        missing = self.schema.missing_columns(rows.keys())
        if missing:
            raise ValueError(f"input is missing the schema columns {missing} (has {list(rows.keys())})")
        columns = {name: rows[name] for name in self.schema.field_names}
        scalars = [name for name, value in columns.items() if not _is_column(value)]
        if len(scalars) == len(columns):  # one row
            columns = {name: [value] for name, value in columns.items()}
        elif scalars:
            raise ValueError(f"fields {scalars} hold a single value, the others columns: pass one row or columns")
        lengths = {name: len(value) for name, value in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have different lengths {lengths} (one value per row each)")
        return self.schema.encode(columns)

    def predict(self, rows: Mapping[str, Any], batch_size: int | None = None) -> np.ndarray:
        """Click probabilities `(N,)` float64 of raw rows (see `encode`), `batch_size` rows per run (default: all)."""
        field_ids = self.encode(rows)
        step = batch_size or max(len(field_ids), 1)
        logits = [self(field_ids[start : start + step]) for start in range(0, len(field_ids), step)]
        return sigmoid(np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32))
