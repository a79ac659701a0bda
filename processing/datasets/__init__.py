"""Dataset recipes: raw files -> `DatasetDict(train, validation, test)` split by time 80/10/10 (PROTOCOL.md).

>>> from processing.datasets import load_ctr_dataset
>>> splits = load_ctr_dataset("movielens-100k")          # 80,000 / 10,000 / 10,000 rows   # doctest: +SKIP
>>> splits = load_ctr_dataset("path/to/table.yaml")      # any CSV / Parquet / JSONL table  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from .base import LABEL, Recipe, split_by_time
from .bookcrossing import BOOKCROSSING
from .download import DownloadError, cache_root, cached_fetch, fetch_url
from .goodreads import GOODREADS
from .movielens import MOVIELENS_1M, MOVIELENS_100K
from .table import table_recipe

RECIPES: dict[str, Recipe] = {r.name: r for r in (MOVIELENS_100K, MOVIELENS_1M, BOOKCROSSING, GOODREADS)}
SCHEMA_FILE_SUFFIXES = {".json", ".yaml", ".yml"}
EXAMPLES = {"clicks-example": Path(__file__).parent / "example" / "clicks.yaml"}  # a table schema file + its CSV


def get_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A registered recipe by name, or a table recipe from a JSON/YAML schema file path."""
    if str(name_or_path) in RECIPES:
        return RECIPES[str(name_or_path)]
    if str(name_or_path) in EXAMPLES:
        return table_recipe(EXAMPLES[str(name_or_path)])
    path = Path(name_or_path)
    if path.is_file() and path.suffix in SCHEMA_FILE_SUFFIXES:
        return table_recipe(path)
    if path.suffix in SCHEMA_FILE_SUFFIXES and not path.exists():
        raise FileNotFoundError(f"dataset file {str(name_or_path)!r} does not exist (no such table schema file)")
    names = sorted([*RECIPES, *EXAMPLES])
    raise ValueError(f"Unknown dataset {str(name_or_path)!r}: use one of {names} or a table schema file")


def load_ctr_dataset(name_or_path: str | os.PathLike, cache_dir: str | None = None, **kwargs) -> DatasetDict:
    """Build the train/validation/test `DatasetDict` of a recipe; `kwargs` go to the recipe (e.g. `raw_path=`)."""
    return get_recipe(name_or_path).load(cache_dir=cache_dir, **kwargs)


__all__ = [
    "LABEL",
    "RECIPES",
    "DownloadError",
    "Recipe",
    "cache_root",
    "cached_fetch",
    "fetch_url",
    "get_recipe",
    "load_ctr_dataset",
    "split_by_time",
    "table_recipe",
]
