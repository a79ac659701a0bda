"""Score a table with a saved FLIP / baseline CTR model: the same rows plus a `ctr` probability column.

    python -m training.predict outputs/demo/flip rows.csv --output_file scored.csv
    flip predict my-user/flip-movielens-100k rows.parquet --output_file scored.parquet --batch_size 512
    flip predict exported/flip-id big.jsonl --output_file big.scored.parquet --chunk_size 200000   # flip export-id
    flip predict exported/flip-id-onnx rows.csv --runtime onnx     # flip export-onnx: ONNX Runtime, no torch model

Input and output: `.csv`, `.parquet` or `.jsonl` (by suffix; they may differ). The input is streamed in chunks of
`--chunk_size` rows (pandas chunks for CSV / JSONL, pyarrow `iter_batches` for Parquet), each chunk encoded, scored
and appended to the output, so memory stays flat whatever the file size; a progress bar counts rows and the
throughput (rows/s) is printed at the end. CSV cells are read as strings, so ids such as zip codes keep their
leading zeros. The output is written to a temporary file next to it and renamed once complete: an interrupted run
never leaves a half-written output (an existing file stays as it was). ID models (`ctr_mode="id"`) encode rows with
the schema alone (no tokenisation); so does `--runtime onnx` (`processing.onnx_serving.ORTFlipForCTR`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoProcessor

import modeling_flip  # noqa: F401  (registers the FLIP Auto classes)
import processing  # noqa: F401  (registers FlipProcessor with AutoProcessor)
from processing.atomic_io import atomic_file
from processing.collators import DataCollatorForCTR
from processing.onnx_serving import ORTFlipForCTR
from processing.processing_flip import SchemaEncoder, load_schema
from processing.schema import describe_oov

from .arguments import command_parser
from .ctr_metrics import sigmoid
from .model_builder import check_model_source
from .scoring import predict_logits

SUFFIXES = (".csv", ".parquet", ".jsonl")


def table_suffix(path: str) -> str:
    """`.csv` / `.parquet` / `.jsonl` of `path`, or a `ValueError` listing them."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported table format {suffix!r}; use one of {list(SUFFIXES)}")
    return suffix


def iter_chunks(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The rows of a table as DataFrames of at most `chunk_size` rows, read lazily."""
    suffix = table_suffix(path)
    if suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
        return
    if suffix == ".csv":
        reader = pd.read_csv(path, dtype=str, chunksize=chunk_size)
    else:
        reader = pd.read_json(path, lines=True, dtype=False, chunksize=chunk_size)
    with reader:
        yield from reader


def count_rows(path: str) -> int | None:
    """Row count when it is free (Parquet metadata), else None (the progress bar then has no total)."""
    return pq.ParquetFile(path).metadata.num_rows if table_suffix(path) == ".parquet" else None


class TableAppender:
    """Append DataFrames to a `.csv` / `.parquet` / `.jsonl` file (format from `suffix`); `close()` finishes it."""

    def __init__(self, path: str, suffix: str):
        self.path, self.suffix, self.rows = path, suffix, 0
        self._files = ExitStack()  # the Parquet writer, once the first chunk gives the schema
        self._parquet: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.suffix == ".parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = self._files.enter_context(pq.ParquetWriter(self.path, table.schema))
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:  # text formats: one append per chunk (chunks are large)
            with open(self.path, "w" if self.rows == 0 else "a", encoding="utf-8", newline="") as handle:
                if self.suffix == ".csv":
                    frame.to_csv(handle, header=self.rows == 0, index=False)
                else:
                    frame.to_json(handle, orient="records", lines=True, force_ascii=False)
        self.rows += len(frame)

    def close(self) -> None:
        self._files.close()


def load_ctr_model(model_dir: str, processor_dir: str | None = None):
    """(model in eval mode, row encoder) of a saved CTR model folder, Hub repo or `flip export-id` folder.

    The encoder is the `FlipProcessor` (from `processor_dir`, default `model_dir`), or for `ctr_mode="id"` a
    `SchemaEncoder` over its schema (same field ids, no tokenizer). Its schema must match the model's fields and
    vocabulary sizes (`check_compatible`: a `ValueError` naming the difference), else ids would index wrong rows."""
    check_model_source(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    source = processor_dir or model_dir
    if model.config.ctr_mode == "id":
        encoder = SchemaEncoder(load_schema(source))
        encoder.schema.check_compatible(model.config)
        return model, encoder
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{source!r} holds no FlipProcessor ({type(error).__name__}: {error}). The model "
            f"(ctr_mode={model.config.ctr_mode!r}) reads text: score the folder written by `flip finetune` "
            "(model + processor), or pass --processor DIR (a folder with processor_config.json, tokenizer and "
            "flip_schema.json, e.g. a `flip prepare` folder)"
        ) from error
    processor.schema.check_compatible(model.config)
    return model, processor


def encode_frame(processor, frame: pd.DataFrame) -> Dataset:
    """Rows of `frame` -> processor outputs (a `Dataset`; `labels` too when the label column is present)."""
    return Dataset.from_pandas(frame, preserve_index=False).map(
        processor, batched=True, batch_size=4096, remove_columns=list(frame.columns), desc="processing"
    )


def predict_probs(model, processor, encoded, batch_size: int, progress: bool = True) -> np.ndarray:
    """Click probabilities (N,) of encoded rows (a `Dataset` or a list of row dicts)."""
    collator = DataCollatorForCTR(processor.tokenizer, include_text=model.config.ctr_mode != "id")
    return sigmoid(predict_logits(model, encoded, collator, batch_size, description="predicting", progress=progress))


def score_frame(model, processor, frame: pd.DataFrame, batch_size: int, progress: bool = False) -> np.ndarray:
    """Click probabilities (N,) of the raw rows of one chunk (encoded in memory, no `Dataset`); an ONNX Runtime model
    (`ORTFlipForCTR`, no processor) encodes them with its own schema."""
    if isinstance(model, ORTFlipForCTR):
        return model.predict(frame, batch_size=batch_size)
    encoded = processor(frame)
    rows = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    return predict_probs(model, processor, rows, batch_size, progress=progress)


def score_file(model, processor, input_file: str, output_file: str, chunk_size: int, batch_size: int) -> int:
    """Stream `input_file` in chunks into `output_file` (+ `ctr` column, written atomically); return the rows."""
    start = time.time()
    suffix = table_suffix(output_file)
    with (
        atomic_file(output_file) as tmp_path,
        closing(TableAppender(tmp_path, suffix)) as writer,
        tqdm(total=count_rows(input_file), unit="row", desc="scoring") as bar,
    ):
        for frame in iter_chunks(input_file, chunk_size):
            frame["ctr"] = score_frame(model, processor, frame, batch_size)
            writer.write(frame)
            bar.update(len(frame))
        if not os.path.getsize(tmp_path):  # no chunk at all (a header-only CSV still gives its header)
            raise ValueError(f"{input_file} holds no rows: nothing to score (no output written)")
    seconds = max(time.time() - start, 1e-9)
    print(f"scored {writer.rows} rows in {seconds:.1f} s ({writer.rows / seconds:,.0f} rows/s) -> {output_file}")
    schema = getattr(processor, "schema", None) or getattr(model, "schema", None)
    if schema is not None:
        line, warnings = describe_oov(schema.oov_shares(writer.rows))
        print("\n".join([f"unseen in train or missing, per field: {line}", *warnings]))
    return writer.rows


def main(argv: list[str] | None = None, prog: str = "python -m training.predict") -> str:
    parser = command_parser(prog, __doc__)
    parser.add_argument("model", help="CTR model folder or Hub repo id (`flip export-id` / `export-onnx` ones too)")
    parser.add_argument("input_file", help="table to score (.csv, .parquet, .jsonl)")
    parser.add_argument(
        "--output_file", default=None, help="default: INPUT with a .scored suffix before the extension"
    )
    parser.add_argument("--batch_size", type=int, default=256, help="rows per forward pass")
    parser.add_argument("--chunk_size", type=int, default=100_000, help="rows read, scored and written at a time")
    parser.add_argument("--processor", default=None, help="folder of the FlipProcessor (default: MODEL)")
    parser.add_argument(
        "--runtime", choices=["torch", "onnx"], default="torch", help="onnx: MODEL is a `flip export-onnx` folder"
    )
    args = parser.parse_args(argv)
    if args.runtime == "onnx" and args.processor:
        parser.error("--processor does not apply to --runtime onnx: the exported folder encodes rows with its schema")
    if not os.path.isfile(args.input_file):
        parser.error(f"input file {args.input_file!r} does not exist")
    stem, suffix = os.path.splitext(args.input_file)
    output_file = args.output_file or f"{stem}.scored{suffix}"
    if args.runtime == "onnx":
        model, processor = ORTFlipForCTR.from_pretrained(args.model), None
    else:
        model, processor = load_ctr_model(args.model, args.processor)
    score_file(model, processor, args.input_file, output_file, args.chunk_size, args.batch_size)
    return output_file


if __name__ == "__main__":
    main()
