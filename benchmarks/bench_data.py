"""Benchmark inputs: encoded ML-100k prompts and the text encoder, from the library or from a portable bundle.

Two sources of the same rows (processor output: `input_ids`, `attention_mask`, `token_field_index`, `field_ids`,
`labels`):

- `prepared_ml100k(...)`: the library's own `processing.prepare.prepare_dataset` (needs `datasets`), cached in
  `benchmarks/.cache/` (ignored by git).
- `load_bundle(dir)`: a folder written by `export_bundle` (NumPy `.npz` + saved `FlipProcessor` + the text encoder in
  fp16 safetensors). It needs only numpy, torch and transformers, so it travels to a GPU machine without `datasets`.

    python benchmarks/bench_data.py export --output benchmarks/.cache/bundle     # here (~50 MB with MiniLM)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/bench_data.py` from anywhere
    sys.path.insert(0, str(REPO))

from processing import FlipProcessor  # noqa: E402  (numpy + transformers only: no `datasets`)
from processing.text_models import resolve_text_model  # noqa: E402

CACHE = REPO / "benchmarks" / ".cache"
DATASET = "movielens-100k"
ROW_KEYS = ("input_ids", "token_field_index", "field_ids", "labels")
TOKEN_KEYS = ("input_ids", "token_field_index")
STATS_NAME = "prepare_stats.json"


@dataclass
class BenchData:
    """Encoded splits as lists of processor rows, the processor, the text encoder's path and prepare statistics."""

    processor: FlipProcessor
    splits: dict[str, list[dict[str, Any]]]
    text_model_path: str
    stats: dict[str, Any] = field(default_factory=dict)

    def lengths(self, split: str = "train") -> np.ndarray:
        """Token count of every row of `split` (special tokens included)."""
        return np.fromiter((len(row["input_ids"]) for row in self.splits[split]), dtype=np.int64)


def prepared_folder(text_model: str, max_length: int) -> Path:
    """`benchmarks/.cache/movielens-100k-<text model>-L<max_length>` (written by `prepared_ml100k`)."""
    return CACHE / f"{DATASET}-{Path(text_model.rstrip('/')).name}-L{max_length}"


def prepared_ml100k(
    text_model: str = "minilm", max_length: int = 100, splits: tuple[str, ...] = ("train",)
) -> BenchData:
    """ML-100k encoded by the library (`processing.prepare.prepare_dataset`, cached), as lists of rows."""
    from datasets import load_from_disk

    from processing.prepare import prepare_dataset

    folder = prepared_folder(text_model, max_length)
    if not (folder / "dataset_dict.json").is_file():
        prepare_dataset(DATASET, folder, text_model=text_model, max_length=max_length, overwrite=True)
    data = load_from_disk(str(folder))
    rows = {name: _rows_from_columns(data[name].to_dict()) for name in splits}
    stats = json.loads((folder / STATS_NAME).read_text())
    return BenchData(FlipProcessor.from_pretrained(str(folder)), rows, resolve_text_model(text_model), stats)


def _rows_from_columns(columns: dict[str, list]) -> list[dict[str, Any]]:
    """Dict of column lists -> list of row dicts with `attention_mask` (all ones: rows are unpadded)."""
    keys = [key for key in ROW_KEYS if key in columns]
    rows = [dict(zip(keys, values)) for values in zip(*(columns[key] for key in keys))]
    for row in rows:
        row["attention_mask"] = [1] * len(row["input_ids"])
    return rows


def export_bundle(output: str | os.PathLike, text_model: str = "minilm", max_length: int = 100) -> Path:
    """Write the library-prepared ML-100k (all splits) and its text encoder to `output` (see `write_bundle`)."""
    return write_bundle(prepared_ml100k(text_model, max_length, splits=("train", "validation", "test")), output)


def write_bundle(data: BenchData, output: str | os.PathLike) -> Path:
    """Write `data`'s splits (`rows.npz`), processor, statistics and text encoder (fp16 safetensors) to `output`."""
    import torch
    from transformers import AutoModel

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name, rows in data.splits.items():
        arrays[f"{name}/lengths"] = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int32)
        for key in TOKEN_KEYS:
            arrays[f"{name}/{key}"] = np.concatenate([np.asarray(r[key], dtype=np.int32) for r in rows])
        arrays[f"{name}/field_ids"] = np.asarray([r["field_ids"] for r in rows], dtype=np.int32)
        arrays[f"{name}/labels"] = np.asarray([r["labels"] for r in rows], dtype=np.int8)
    np.savez_compressed(output / "rows.npz", **arrays)
    data.processor.save_pretrained(str(output / "processor"))
    (output / STATS_NAME).write_text(json.dumps(data.stats, indent=2))
    encoder = AutoModel.from_pretrained(data.text_model_path, dtype=torch.float16)
    encoder.save_pretrained(str(output / "text_model"))
    data.processor.tokenizer.save_pretrained(str(output / "text_model"))
    return output


def load_bundle(folder: str | os.PathLike, splits: tuple[str, ...] = ("train",)) -> BenchData:
    """Read a folder written by `export_bundle` (no `datasets` needed)."""
    folder = Path(folder)
    arrays = np.load(folder / "rows.npz")
    rows = {}
    for name in splits:
        bounds = np.concatenate([[0], np.cumsum(arrays[f"{name}/lengths"])]).tolist()
        tokens = {key: arrays[f"{name}/{key}"].tolist() for key in TOKEN_KEYS}
        columns = {key: [values[a:b] for a, b in pairwise(bounds)] for key, values in tokens.items()}
        columns["field_ids"] = arrays[f"{name}/field_ids"].tolist()
        columns["labels"] = arrays[f"{name}/labels"].tolist()
        rows[name] = _rows_from_columns(columns)
    stats = json.loads((folder / STATS_NAME).read_text())
    processor = FlipProcessor.from_pretrained(str(folder / "processor"))
    return BenchData(processor, rows, str(folder / "text_model"), stats)


def load_data(bundle: str | None, text_model: str = "minilm", max_length: int = 100) -> BenchData:
    """From `bundle` when given, else from the library's prepared ML-100k."""
    return load_bundle(bundle) if bundle else prepared_ml100k(text_model, max_length)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["export"])
    parser.add_argument("--output", default=str(CACHE / "bundle"))
    parser.add_argument("--text_model", default="minilm")
    parser.add_argument("--max_length", type=int, default=100)
    args = parser.parse_args(argv)
    folder = export_bundle(args.output, args.text_model, args.max_length)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"bundle written to {folder} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
