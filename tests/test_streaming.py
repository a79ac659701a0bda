"""Streaming (issue 8): training from a `datasets` streaming source with bounded memory.

- library level: a synthetic table written to Parquet in row groups, read back with
  `load_dataset("parquet", ..., streaming=True)`, `.map(processor, batched=True)`, trained with `FlipTrainer`
  (`max_steps`) while a callback samples the process RSS: it must stay flat once the first batches are in;
- script level: `training.finetune --streaming true --max_steps N` reads the prepared train split as an
  `IterableDataset` (shuffle buffer) and refuses to run without `--max_steps`.

Default suite: 60k rows (each row read once); the slow test streams 300k rows. Figures in RELIABILITY.md.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import IterableDataset, load_dataset
from transformers import TrainerCallback

from modeling_flip import FlipForCTR
from processing import FieldSpec, FlipProcessor, PromptTemplate, TabularSchema
from processing.collators import DataCollatorForCTR
from tests._data_fixtures import tiny_id_config
from training.arguments import FlipTrainingArguments
from training.trainer import FlipTrainer

COLUMNS = ["user", "item", "genre", "label"]
GENRES = np.array(["comedy", "drama", "war", "noir", "sci-fi", "western"])


def write_table(path, rows: int, chunk: int = 20_000) -> None:
    """`rows` synthetic rows (clicks follow the item parity), written chunk by chunk in 5k-row row groups."""
    with pq.ParquetWriter(path, pa.schema([(c, pa.string()) for c in COLUMNS[:-1]] + [("label", pa.int64())])) as w:
        for start in range(0, rows, chunk):
            index = np.arange(start, min(rows, start + chunk))
            w.write_table(
                pa.table(
                    {
                        "user": np.char.add("u", (index * 7919 % 100_003).astype(str)),
                        "item": np.char.add("i", (index % 5003).astype(str)),
                        "genre": GENRES[index % 6],
                        "label": (index % 5003 % 2 == 0).astype(np.int64),
                    }
                ),
                row_group_size=5_000,
            )


def make_processor(tokenizer) -> FlipProcessor:
    """Hashed user/item fields (no vocabulary to fit over the stream), genre fitted on its six values."""
    schema = TabularSchema(
        [FieldSpec("user", num_buckets=2048), FieldSpec("item", num_buckets=1024), FieldSpec("genre")]
    ).fit({"user": [], "item": [], "genre": GENRES.tolist()})
    return FlipProcessor(tokenizer, schema, PromptTemplate(), max_length=48)


def stream(path, processor) -> IterableDataset:
    source = load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    return source.map(processor, batched=True, batch_size=1024, remove_columns=COLUMNS)


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle)
    return int(status["VmRSS"].split()[0]) / 1024


class RssProbe(TrainerCallback):
    def __init__(self):
        self.samples: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.samples.append(rss_mib())


def train_on_stream(path, tokenizer, tiny_text_config, output_dir, steps: int, batch_size: int = 256):
    processor = make_processor(tokenizer)
    schema = processor.schema
    config = tiny_id_config(schema, tiny_text_config)
    torch.manual_seed(0)
    args = FlipTrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=0,
        logging_steps=10**6,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        label_names=["labels"],
    )
    probe = RssProbe()
    trainer = FlipTrainer(
        model=FlipForCTR(config),
        args=args,
        train_dataset=stream(path, processor),
        data_collator=DataCollatorForCTR(tokenizer, include_text=False),
        callbacks=[probe],
    )
    result = trainer.train()
    return result, probe.samples, processor


def test_streamed_rows_encode_like_in_memory_rows(tmp_path, tiny_tokenizer):
    write_table(tmp_path / "t.parquet", 3000)
    processor = make_processor(tiny_tokenizer)
    streamed = list(stream(tmp_path / "t.parquet", processor).take(2500))
    in_memory = processor(pq.read_table(tmp_path / "t.parquet").slice(0, 2500).to_pandas())
    assert len(streamed) == 2500
    for key in ("input_ids", "token_field_index", "field_ids", "labels"):
        assert [row[key] for row in streamed] == in_memory[key]


def _check_bounded(samples: list[float], rows: int, result, steps: int) -> float:
    growth = max(samples[10:]) - samples[10]
    print(f"\nstreamed {rows:,} rows in {steps} steps: RSS {samples[10]:.0f} -> max {max(samples):.0f} MiB")
    assert result.global_step == steps and np.isfinite(result.training_loss)
    return growth


def test_training_from_a_parquet_stream_keeps_memory_flat(tmp_path, tiny_tokenizer, tiny_text_config):
    rows, steps = 60_000, 234  # every row read once (234 * 256 = 59,904)
    write_table(tmp_path / "t.parquet", rows)
    result, samples, _ = train_on_stream(tmp_path / "t.parquet", tiny_tokenizer, tiny_text_config, tmp_path, steps)
    growth = _check_bounded(samples, rows, result, steps)
    assert growth < 40  # MiB, while ~60k encoded rows (~30 MiB as Python lists) pass through


@pytest.mark.slow  # 300k rows streamed (~1-2 min on a busy 2-core CPU)
def test_training_from_a_300k_row_parquet_stream_keeps_memory_flat(tmp_path, tiny_tokenizer, tiny_text_config):
    rows, steps = 300_000, 1170  # batch 256: each row read once
    write_table(tmp_path / "t.parquet", rows)
    result, samples, _ = train_on_stream(tmp_path / "t.parquet", tiny_tokenizer, tiny_text_config, tmp_path, steps)
    growth = _check_bounded(samples, rows, result, steps)
    assert growth < 40  # the ~150 MiB of encoded rows never sit in memory together


def test_finetune_script_streaming_option(tmp_path, request):
    """`--streaming true` trains from an IterableDataset view of the prepared train split (max_steps required)."""
    from tests.test_training import CONFIGS
    from training import finetune

    data_args = request.getfixturevalue("common_args")  # tests/test_training.py: tiny table + tiny encoder
    argv = [str(CONFIGS / "finetune_tiny.yaml"), *data_args, "--ctr_mode", "id", "--streaming", "true"]
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    with pytest.raises(ValueError, match="--streaming .* set --max_steps"):
        finetune.main([*argv, "--output_dir", str(tmp_path / "a")])
    results = finetune.main([*argv, "--output_dir", str(tmp_path / "b"), "--max_steps", "5"])
    assert results["test"]["test_auc"] > 0.7 and results["test_rows"] > 0  # the table's movie parity: 0.82
