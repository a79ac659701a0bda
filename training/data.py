"""Data for the scripts: a folder prepared by `processing.prepare` (created on first use), bounded splits."""

import json
import os
from pathlib import Path

import numpy as np
from accelerate import PartialState
from datasets import DatasetDict, load_from_disk
from transformers.utils import PROCESSOR_NAME

from processing import FlipProcessor, PromptTemplate
from processing.preparation_key import STATS_NAME, check_sources_unchanged, encoding_options, prepared_folder
from processing.prepare import parse_buckets, prepare_dataset, prompt_options, split_options
from processing.text_models import resolve_text_model

from .arguments import DataArguments, ModelArguments


def is_prepared_dir(path: str) -> bool:
    """A folder written by `processing.prepare` (encoded splits + processor)."""
    return os.path.isfile(os.path.join(path, "dataset_dict.json"))


def dataset_name(data_args: DataArguments) -> str:
    """Short dataset name for cards and result tables (the recipe name of a prepared folder)."""
    stats_path = os.path.join(data_args.dataset, STATS_NAME)
    if os.path.isfile(stats_path):
        return json.loads(Path(stats_path).read_text())["dataset"]
    return Path(data_args.dataset).stem if os.path.isfile(data_args.dataset) else data_args.dataset


def prepared_dir(model_args: ModelArguments, data_args: DataArguments) -> str:
    """The prepared folder of `data_args.dataset`: the folder itself (its source files checked for changes), else the
    cache folder keyed by everything the encoding depends on (`processing.preparation_key`), prepared first (main
    process only) when it is missing: `<data_dir or data>/<dataset>-<text model>-L<max_length>-<key>`."""
    buckets = parse_buckets(data_args.num_buckets)
    if is_prepared_dir(data_args.dataset):
        preparation_flags = {"--num_buckets": buckets, "--prompt_hidden_fields": data_args.prompt_hidden_fields}
        given = " ".join(flag for flag, value in preparation_flags.items() if value)
        if given:
            raise ValueError(
                f"{given} apply when preparing a dataset; {data_args.dataset} is already prepared: pass the recipe "
                f"name or table schema file instead (or run `flip prepare {given} ...`)"
            )
        check_sources_unchanged(data_args.dataset)
        return data_args.dataset
    options = {"text_model": model_args.text_model, "max_length": data_args.max_length, "num_buckets": buckets}
    options |= split_options(data_args.split, data_args.split_seed)
    options |= prompt_options(data_args.prompt_hidden_fields)
    folder = prepared_folder(data_args.dataset, data_args.data_dir or "data", encoding_options(**options))
    with PartialState().main_process_first():
        if not is_prepared_dir(folder):
            prepare_dataset(data_args.dataset, folder, num_proc=data_args.num_proc, overwrite=True, **options)
    return folder


def check_prompt_matches(checkpoint: str | None, processor: FlipProcessor) -> None:
    """`ValueError` when the local FLIP checkpoint `checkpoint` was trained on prompts of another template than
    `processor` writes (e.g. pretrained with `--prompt_hidden_fields`, finetuned without): its text tower would read
    sentences it never saw. Hub ids and folders without a processor are not checked."""
    path = Path(checkpoint or "") / PROCESSOR_NAME
    if not checkpoint or not path.is_file():
        return
    saved = PromptTemplate.from_dict(json.loads(path.read_text(encoding="utf-8")).get("prompt_template"))
    if saved != processor.prompt_template:
        raise ValueError(
            f"{checkpoint} was trained on prompts {saved.to_dict()}, the data is encoded with "
            f"{processor.prompt_template.to_dict()}: pass the checkpoint's --prompt_hidden_fields"
        )


def load_data(
    model_args: ModelArguments, data_args: DataArguments, seed: int = 0
) -> tuple[DatasetDict, FlipProcessor, str]:
    """(encoded train/validation/test splits, bounded by `max_*_samples` and `train_fraction`; the processor; the
    PLM's local path).

    With `data_args.streaming` the train split is a `datasets.IterableDataset` read in shards from the prepared
    Arrow files and shuffled through a `shuffle_buffer_size` buffer (`seed`): memory holds the buffer, not the split.
    """
    folder = prepared_dir(model_args, data_args)
    data = load_from_disk(folder)
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_test_samples,
    }
    for split, limit in limits.items():
        if limit is not None and split in data:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    if data_args.train_fraction is not None:
        data["train"] = data["train"].select(train_subset(len(data["train"]), data_args))
    if data_args.streaming:
        shards = max(1, min(64, len(data["train"]) // 1000))
        stream = data["train"].to_iterable_dataset(num_shards=shards)
        data["train"] = stream.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer_size)
    return data, FlipProcessor.from_pretrained(folder), resolve_text_model(model_args.text_model)


def train_subset(num_rows: int, data_args: DataArguments) -> np.ndarray:
    """Sorted indices of the `train_fraction` train rows: a seeded random subset (`train_subset_seed`: the same rows
    for every model) or the oldest rows (the split is time-ordered)."""
    fraction, how = data_args.train_fraction, data_args.train_subset
    if not 0 < fraction <= 1 or how not in ("random", "oldest"):
        raise ValueError(
            f"--train_fraction must be in (0, 1] and --train_subset random or oldest, got {fraction!r}, {how!r}"
        )
    size = max(1, round(fraction * num_rows))
    if how == "oldest":
        return np.arange(size)
    return np.sort(np.random.default_rng(data_args.train_subset_seed).permutation(num_rows)[:size])
