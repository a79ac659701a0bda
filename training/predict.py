"""Score a table with a saved FLIP / baseline CTR model: the same rows plus a `ctr` probability column.

    python -m training.predict outputs/demo/flip rows.csv --output_file scored.csv
    flip predict my-user/flip-movielens-100k rows.parquet --output_file scored.parquet --batch_size 512

Input and output: `.csv`, `.parquet` or `.jsonl` (by suffix). CSV cells are read as strings, so ids such as zip
codes keep their leading zeros. The output is written to a temporary file and renamed (atomic).
"""

import os
import tempfile

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoProcessor

import modeling_flip  # noqa: F401  (registers the FLIP Auto classes)
import processing  # noqa: F401  (registers FlipProcessor with AutoProcessor)
from processing.collators import DataCollatorForCTR

from .arguments import command_parser
from .common import predict_logits
from .ctr_metrics import sigmoid

READERS = {".csv": lambda path: pd.read_csv(path, dtype=str), ".parquet": pd.read_parquet}
READERS[".jsonl"] = lambda path: pd.read_json(path, lines=True, dtype=False)


def read_table(path: str) -> pd.DataFrame:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in READERS:
        raise ValueError(f"{path}: unsupported table format {suffix!r}; use one of {sorted(READERS)}")
    return READERS[suffix](path)


def write_table_atomic(frame: pd.DataFrame, path: str) -> None:
    """Write `frame` by suffix into a temporary file next to `path`, then rename it to `path`."""
    suffix = os.path.splitext(path)[1].lower()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=folder, suffix=suffix)
    os.close(handle)
    try:
        if suffix == ".csv":
            frame.to_csv(tmp_path, index=False)
        elif suffix == ".parquet":
            frame.to_parquet(tmp_path, index=False)
        elif suffix == ".jsonl":
            frame.to_json(tmp_path, orient="records", lines=True)
        else:
            raise ValueError(f"{path}: unsupported output format {suffix!r}; use .csv, .parquet or .jsonl")
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def load_ctr_model(model_dir: str):
    """(model in eval mode, processor) of a saved CTR model folder or Hub repo."""
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True)
    return model.eval(), processor


def encode_frame(processor, frame: pd.DataFrame) -> Dataset:
    """Rows of `frame` -> processor outputs (a `Dataset`; `labels` too when the label column is present)."""
    return Dataset.from_pandas(frame, preserve_index=False).map(
        processor, batched=True, batch_size=4096, remove_columns=list(frame.columns), desc="processing"
    )


def predict_probs(model, processor, encoded: Dataset, batch_size: int) -> np.ndarray:
    """Click probabilities (N,) of encoded rows."""
    collator = DataCollatorForCTR(processor.tokenizer, include_text=model.config.ctr_mode != "id")
    return sigmoid(predict_logits(model, encoded, collator, batch_size, description="predicting"))


def main(argv: list[str] | None = None, prog: str = "python -m training.predict") -> str:
    parser = command_parser(prog, __doc__)
    parser.add_argument("model", help="saved CTR model folder or Hub repo id")
    parser.add_argument("input_file", help="table to score (.csv, .parquet, .jsonl)")
    parser.add_argument(
        "--output_file", default=None, help="default: INPUT with a .scored suffix before the extension"
    )
    parser.add_argument("--batch_size", type=int, default=256, help="rows per forward pass")
    args = parser.parse_args(argv)
    stem, suffix = os.path.splitext(args.input_file)
    output_file = args.output_file or f"{stem}.scored{suffix}"
    model, processor = load_ctr_model(args.model)
    frame = read_table(args.input_file)
    frame["ctr"] = predict_probs(model, processor, encode_frame(processor, frame), args.batch_size)
    write_table_atomic(frame, output_file)
    print(f"wrote {len(frame)} scored rows to {output_file}")
    return output_file


if __name__ == "__main__":
    main()
