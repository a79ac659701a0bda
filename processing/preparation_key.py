"""What a prepared folder was made from, so that a cached encoding is reused only for the same inputs.

The record of a preparation lists the dataset, every encoding option (tokenizer, `max_length`, prompt template,
hashing buckets, recipe arguments such as a split), a fingerprint of the tokenizer files and the size and
modification time of every source file (a table schema file and its data files). Its hash names the cache folder
that the training scripts prepare on first use, so a change to any of them prepares a new folder instead of silently
reusing a stale one; a folder passed explicitly is checked against its recorded source files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .datasets import get_recipe
from .prompts import PromptTemplate
from .text_models import resolve_text_model

PREPARATION_FORMAT = 1  # bump when the same inputs start to encode differently
STATS_NAME = "prepare_stats.json"


def encoding_options(
    text_model: str,
    max_length: int,
    prompt_template: PromptTemplate | None = None,
    num_buckets: Mapping[str, int] | None = None,
    **recipe_kwargs: Any,
) -> dict[str, Any]:
    """Every `prepare_dataset` argument that changes the encoded rows, normalised (defaults filled in, JSON types).
    A new preparation option must pass through here (recipe arguments, e.g. a split option, do automatically)."""
    return {
        "text_model": text_model,
        "max_length": max_length,
        "prompt_template": (prompt_template or PromptTemplate()).to_dict(),
        "num_buckets": dict(sorted((num_buckets or {}).items())),
        **{key: str(value) if isinstance(value, os.PathLike) else value for key, value in recipe_kwargs.items()},
    }


def file_fingerprint(path: str | os.PathLike) -> list[int]:
    """`[size, modification time in ns]` of a file."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def tokenizer_fingerprint(text_model: str) -> dict[str, Any]:
    """The resolved tokenizer: its Hub id, or the fingerprints of the files of a local folder."""
    resolved = resolve_text_model(text_model)
    if not os.path.isdir(resolved):
        return {"id": resolved}
    return {entry.name: file_fingerprint(entry.path) for entry in sorted(os.scandir(resolved), key=lambda e: e.name)}


def preparation_record(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What preparing dataset `name` (recipe name or table schema file) with `encoding_options` depends on."""
    recipe = get_recipe(name)
    files = [*recipe.source_files, *(value for value in options.values() if isinstance(value, str))]
    return {
        "format": PREPARATION_FORMAT,
        "dataset": recipe.name,
        "options": dict(options),
        "tokenizer": tokenizer_fingerprint(options["text_model"]),
        "sources": {str(Path(path).resolve()): file_fingerprint(path) for path in files if os.path.isfile(path)},
    }


def preparation_key(record: Mapping[str, Any]) -> str:
    """A short hash of a preparation record."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()[:10]


def prepared_folder(name: str, data_dir: str | os.PathLike, options: Mapping[str, Any]) -> str:
    """The cache folder of `name` prepared with `options`: `<data_dir>/<dataset>-<text model>-L<max_length>-<key>`."""
    record = preparation_record(name, options)
    text_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(options["text_model"]).rstrip("/")).name)
    return os.path.join(data_dir, f"{record['dataset']}-{text_key}-L{options['max_length']}-{preparation_key(record)}")


def check_sources_unchanged(folder: str | os.PathLike) -> None:
    """Raise `ValueError` when a source file that `folder` was prepared from has changed since (folders prepared
    before records were kept, and sources that no longer exist, are not checked)."""
    stats_path = Path(folder) / STATS_NAME
    record = json.loads(stats_path.read_text()).get("preparation") if stats_path.is_file() else None
    changed = [
        path
        for path, fingerprint in (record or {}).get("sources", {}).items()
        if os.path.isfile(path) and file_fingerprint(path) != fingerprint
    ]
    if changed:
        raise ValueError(
            f"{folder} was prepared from {changed}, which changed since (size or modification time): pass the table "
            f"schema file as --dataset (a fresh cache folder is prepared) or run `flip prepare ... --overwrite`"
        )
