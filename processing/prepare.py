"""`flip prepare DATASET`: raw data -> processed DatasetDict + FlipProcessor in one folder.

    flip prepare movielens-100k --output_dir data/ml100k --max_length 80
    flip prepare clicks-example                    # the shipped example table (processing/datasets/example/)
    flip prepare my_table.yaml                      # your own table, described by a table schema file (below)
    flip prepare rows.csv --label clicked           # infers rows.yaml (check and edit it), then prepares it

The output folder holds the encoded splits (`datasets.load_from_disk(dir)`), the processor
(`FlipProcessor.from_pretrained(dir)`: tokenizer, fitted schema `flip_schema.json`, template) and
`prepare_stats.json` (rows/s, token lengths, truncation, OOV rates). It is written to a temporary sibling folder
and renamed into place, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import DatasetDict, Features, List, Value
from transformers import AutoTokenizer

from .atomic_io import atomic_dir
from .datasets import get_recipe
from .datasets.base import SPLIT_METHODS
from .datasets.table import READERS, infer_schema, write_schema_file
from .datasets.table import __doc__ as SCHEMA_HELP
from .preparation_key import STATS_NAME, encoding_options, preparation_record, prepared_folder
from .processing_flip import FlipProcessor
from .prompts import PromptTemplate
from .schema import FIELD_OOV_ID, FieldSpec, TabularSchema, describe_oov
from .text_models import resolve_text_model

TRUNCATION_KEY = "num_truncated_values"


def _encode(batch: dict[str, list], processor: FlipProcessor) -> dict[str, list]:
    return dict(processor(batch, return_truncation=True))


def processor_fingerprint(processor: FlipProcessor) -> str:
    """Content hash of everything that changes the processor's output (cheaper than datasets' dill hashing)."""
    state = json.dumps(processor.to_dict(), sort_keys=True) + json.dumps(processor.schema.to_dict())
    state += processor.tokenizer.backend_tokenizer.to_str()
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def encode_splits(splits: DatasetDict, processor: FlipProcessor, num_proc: int | None, batch_size: int) -> DatasetDict:
    """`Dataset.map(batched=True, num_proc)` of the processor over every split; drops the raw columns."""
    fingerprint = processor_fingerprint(processor)
    features = Features(
        {
            "input_ids": List(Value("int32")),
            "attention_mask": List(Value("int8")),
            "token_field_index": List(Value("int16")),
            "field_ids": List(Value("int64")),
            TRUNCATION_KEY: Value("int32"),
            **({"labels": Value("int64")} if processor.schema.label_column in splits["train"].column_names else {}),
        }
    )
    return DatasetDict(
        {
            name: split.map(
                _encode,
                fn_kwargs={"processor": processor},
                batched=True,
                batch_size=batch_size,
                num_proc=num_proc,
                remove_columns=split.column_names,
                features=features,
                new_fingerprint=hashlib.sha256(f"{split._fingerprint}-{fingerprint}".encode()).hexdigest()[:16],
                desc=f"FLIP encode {name}",
            )
            for name, split in splits.items()
        }
    )


def with_buckets(schema: TabularSchema, num_buckets: Mapping[str, int]) -> TabularSchema:
    """`schema` with `num_buckets[field]` hashing buckets on the named fields (validated: known field, n >= 1)."""
    unknown = sorted(set(num_buckets) - set(schema.field_names))
    if unknown:
        raise ValueError(f"num_buckets names unknown fields {unknown}; the fields are {schema.field_names}")
    schema.fields = [
        FieldSpec(**{**spec.to_dict(), "num_buckets": num_buckets[spec.name]}) if spec.name in num_buckets else spec
        for spec in schema.fields
    ]
    return schema


def parse_buckets(items: list[str] | None) -> dict[str, int]:
    """`["user_id=100000", "item=5000"]` -> `{"user_id": 100000, "item": 5000}`."""
    buckets = {}
    for item in items or []:
        name, _, number = item.rpartition("=")
        if not name or not number.isdigit():
            raise ValueError(f"--num_buckets takes FIELD=N items (e.g. user_id=100000), got {item!r}")
        buckets[name] = int(number)
    return buckets


def split_stats(split, field_names: list[str]) -> dict[str, Any]:
    """Token-length distribution, truncation and per-field OOV rate of one encoded split."""
    table = split.with_format("arrow")[:]
    lengths = pc.list_value_length(table["input_ids"]).to_numpy()
    cut = table[TRUNCATION_KEY].to_numpy()
    field_ids = pc.list_flatten(table["field_ids"]).to_numpy().reshape(len(split), -1)
    return {
        "rows": len(split),
        "tokens": {
            "mean": round(float(lengths.mean()), 2),
            "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        },
        "truncated_rows": int((cut > 0).sum()),
        "truncated_values": int(cut.sum()),
        "oov_rate": dict(zip(field_names, np.round((field_ids == FIELD_OOV_ID).mean(0), 4).tolist())),
    }


def _write_atomically(output_dir: Path, encoded: DatasetDict, processor: FlipProcessor, stats: dict, overwrite: bool):
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_dir(output_dir) as tmp:
        encoded.save_to_disk(str(tmp))
        processor.save_pretrained(str(tmp))
        (tmp / STATS_NAME).write_text(json.dumps(stats, indent=2))


def prepare_dataset(
    name: str,
    output_dir: str | os.PathLike,
    text_model: str = "minilm",
    max_length: int = 128,
    num_proc: int | None = 1,
    batch_size: int = 1000,
    cache_dir: str | None = None,
    overwrite: bool = False,
    prompt_template: PromptTemplate | None = None,
    num_buckets: Mapping[str, int] | None = None,
    **recipe_kwargs: Any,
) -> dict[str, Any]:
    """Load a recipe's splits, fit the schema on train, encode every split and save data + processor to `output_dir`.

    Args:
        name: registered dataset name or table schema file (see `processing.datasets.load_ctr_dataset`).
        text_model: tokenizer name or path (`resolve_text_model` aliases such as "minilm").
        num_proc: processes for `Dataset.map` (None = 1). One process already uses every core in the Rust
            tokenizer (the bulk of the work) and was faster than 2 processes on a 2-core machine; raise it for
            large tables on many cores.
        num_buckets: `{field: n}` hashes these fields into n buckets (overrides the recipe / schema file), so a
            field with millions of distinct values gets a bounded embedding table (see `FieldSpec`).
        recipe_kwargs: passed to the recipe (e.g. `raw_path=` for bookcrossing/goodreads).

    Returns:
        the statistics also written to `prepare_stats.json`.
    """
    recipe = get_recipe(name)
    options = encoding_options(text_model, max_length, prompt_template, num_buckets, **recipe_kwargs)
    record = preparation_record(name, options)  # before reading: a file changed while preparing counts as changed
    splits = recipe.load(cache_dir=cache_dir, **recipe_kwargs)
    empty = [split_name for split_name, split in splits.items() if len(split) == 0]
    if empty:
        sizes = {split_name: len(split) for split_name, split in splits.items()}
        raise ValueError(
            f"{recipe.name}: the {empty} split(s) are empty {sizes}; training and evaluation need rows in every "
            "split of the 80/10/10 time split (give the table at least 10 rows)"
        )
    schema = with_buckets(recipe.schema(), num_buckets or {})
    schema.fit(splits["train"].select_columns(recipe.field_names).to_pandas())
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(text_model))
    processor = FlipProcessor(tokenizer, schema, prompt_template or PromptTemplate(), max_length=max_length)
    start = time.perf_counter()
    encoded = encode_splits(splits, processor, num_proc if num_proc and num_proc > 1 else None, batch_size)
    seconds = time.perf_counter() - start
    total = sum(len(split) for split in encoded.values())
    stats = {
        "dataset": recipe.name,
        "text_model": text_model,
        "max_length": max_length,
        "num_proc": num_proc,
        "rows_per_second": round(total / seconds, 1),
        "field_vocab_sizes": dict(zip(schema.field_names, schema.field_vocab_sizes)),
        "splits": {split_name: split_stats(split, schema.field_names) for split_name, split in encoded.items()},
        "preparation": record,
    }
    encoded = encoded.remove_columns(TRUNCATION_KEY)
    _write_atomically(Path(output_dir), encoded, processor, stats, overwrite)
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """The statistics for the console: rows, token lengths and truncation per split, then per field the share of
    unseen-or-missing values in each split (and a warning for each share above `OOV_WARNING_SHARE`)."""
    lines = [f"{stats['dataset']}: {stats['rows_per_second']:,.0f} rows/s with num_proc={stats['num_proc']}"]
    for name, split in stats["splits"].items():
        t = split["tokens"]
        lines.append(
            f"  {name:<10} {split['rows']:>9,} rows  tokens mean {t['mean']} p50 {t['p50']:.0f} p95 {t['p95']:.0f} "
            f"max {t['max']}  truncated rows {split['truncated_rows']} values {split['truncated_values']}"
        )
    lines.append("unseen in train or missing, per field:")
    warnings = []
    for name, split in stats["splits"].items():
        line, split_warnings = describe_oov(split["oov_rate"])
        lines.append(f"  {name:<10} {line}")
        warnings += [f"{warning} ({name} split)" for warning in split_warnings]
    return "\n".join(lines + warnings)


def split_options(split: str, split_seed: int) -> dict[str, Any]:
    """Recipe arguments of a split: none for the default time split (its cache key stays the same), else the method
    and its seed."""
    return {} if split == "time" else {"split": split, "split_seed": split_seed}


def prompt_options(hidden_fields: Sequence[str] | None) -> dict[str, Any]:
    """`prepare_dataset` arguments of `--prompt_hidden_fields`: none without hidden fields (the default template)."""
    return {"prompt_template": PromptTemplate(hidden_fields=list(hidden_fields))} if hidden_fields else {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flip prepare",
        description="\n\n".join([*__doc__.split("\n\n")[:2], f"Table schema file:\n{SCHEMA_HELP}"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset", help="registered name (movielens-100k, clicks-example, ...), table schema file or table (--label)"
    )
    parser.add_argument("--label", default=None, help="a table file: its label column (a schema file is inferred)")
    parser.add_argument("--label_threshold", type=float, default=None, help="with --label: label = value >= T")
    parser.add_argument("--positive_labels", nargs="+", default=None, help="with --label: the values of a click")
    parser.add_argument(
        "--output_dir",
        "--output-dir",
        help="default: the cache folder that `flip pretrain` / `flip finetune --dataset DATASET` (same --text_model, "
        "--max_length, --num_buckets) reuse: data/<dataset>-<text model>-L<max_length>-<key>",
    )
    parser.add_argument(
        "--text_model", "--text-model", default="minilm", help="tokenizer name or path (default: bundled MiniLM)"
    )
    parser.add_argument("--max_length", "--max-length", type=int, default=128)
    parser.add_argument(
        "--num_proc",
        "--num-proc",
        type=int,
        default=1,
        help="processes for Dataset.map (default 1: the tokenizer already uses all cores)",
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=1000)
    parser.add_argument(
        "--cache_dir", "--cache-dir", default=None, help="raw download cache (default: $FLIP_CACHE or ~/.cache/flip)"
    )
    parser.add_argument(
        "--raw_path", "--raw-path", default=None, help="local raw archive or folder (bookcrossing, goodreads, ...)"
    )
    parser.add_argument("--subset", default=None, help="goodreads genre subset, e.g. poetry")
    parser.add_argument(
        "--split",
        choices=SPLIT_METHODS,
        default="time",
        help="time: the time-ordered 80/10/10 split (PROTOCOL.md); random: a seeded random 80/10/10 split of rows",
    )
    parser.add_argument("--split_seed", "--seed", type=int, default=0, help="seed of --split random")
    parser.add_argument(
        "--num_buckets",
        "--num-buckets",
        nargs="+",
        metavar="FIELD=N",
        help="hash these fields into N buckets (bounded embedding tables for fields with millions of values)",
    )
    parser.add_argument(
        "--prompt_hidden_fields",
        "--prompt-hidden-fields",
        nargs="+",
        metavar="FIELD",
        help="leave these fields out of the prompt text (the ID model still reads them)",
    )
    parser.add_argument("--overwrite", action="store_true")
    return parser


def schema_for_table(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """`args.dataset` itself, or for a table file (.csv, .parquet, ...) the schema file inferred next to it."""
    table = Path(args.dataset)
    if table.suffix not in READERS:
        return args.dataset
    if args.label is None:
        parser.error(f"{table} is a table: name its label column with --label COLUMN (a schema file is inferred)")
    schema_path = table.with_suffix(".yaml")
    if schema_path.exists() and not args.overwrite:
        parser.error(
            f"{schema_path} exists: prepare it (`flip prepare {schema_path}`) or infer it again (--overwrite)"
        )
    config, notes = infer_schema(table, args.label, args.label_threshold, args.positive_labels)
    write_schema_file(config, schema_path, notes, f"flip prepare {table} --label {args.label}")
    print(f"wrote {schema_path} (fields {config['fields']}; {'; '.join(notes)}): check and edit it")
    return str(schema_path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.dataset = schema_for_table(args, parser)
    recipe_kwargs = {k: v for k, v in (("raw_path", args.raw_path), ("subset", args.subset)) if v is not None}
    recipe_kwargs |= split_options(args.split, args.split_seed)
    options = {"text_model": args.text_model, "max_length": args.max_length, **recipe_kwargs}
    options["num_buckets"] = parse_buckets(args.num_buckets)
    options |= prompt_options(args.prompt_hidden_fields)
    output_dir = args.output_dir or prepared_folder(args.dataset, "data", encoding_options(**options))
    stats = prepare_dataset(
        args.dataset,
        output_dir,
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        **options,
    )
    print(format_stats(stats))
    print(f"saved to {output_dir}")
    return stats


if __name__ == "__main__":
    main()
