"""UCSD Goodreads (JSON lines, optionally .gz): interactions + books (+ authors, genres, works when present).

15 fields as in the reference code (reference_code_analysis.md §1.2): user id, book id, book title, book genres,
average rating, number of book reviews, author id, author name, number of pages, ebook flag, format, publisher,
publication year, work id, media type. Label = rating >= 4; rating 0 (shelved without a rating) is dropped.
Time = `date_added` as unix seconds. `book genres` = the book's most-voted genre in the genres file; `media type`
comes from the works file; both are missing (-> "unknown" / OOV) when their file is absent.

Files are looked up by name in `raw_path` (folder or zip): `goodreads_interactions{suffix}.json[.gz]`,
`goodreads_books{suffix}.json[.gz]`, `goodreads_book_authors.json[.gz]`, `goodreads_book_genres_initial.json[.gz]`,
`goodreads_book_works.json[.gz]`, with `suffix` = `_dedup` for the full set or `_<genre>` (e.g. `_poetry`) for a
genre subset (`subset="poetry"`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .base import LABEL, Recipe, as_display_strings, sort_for_split
from .raw import RawFiles

FIELDS = [
    ("user_id", "user id"),
    ("book_id", "book id"),
    ("title", "book title"),
    ("genres", "book genres"),
    ("average_rating", "average rating"),
    ("text_reviews_count", "number of book reviews"),
    ("author_id", "author id"),
    ("author_name", "author name"),
    ("num_pages", "number of pages"),
    ("is_ebook", "ebook flag"),
    ("format", "format"),
    ("publisher", "publisher"),
    ("publication_year", "publication year"),
    ("work_id", "work id"),
    ("media_type", "media type"),
]
BOOK_COLUMNS = ["book_id", "title", "average_rating", "text_reviews_count", "authors", "num_pages", "is_ebook",
                "format", "publisher", "publication_year", "work_id"]  # fmt: skip
DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"  # "Tue Oct 17 03:21:52 -0700 2017"


def read_json_lines(raw: RawFiles, stem: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """`stem.json.gz` or `stem.json` as a DataFrame of the given columns; None when neither exists."""
    for name, compression in ((f"{stem}.json.gz", "gzip"), (f"{stem}.json", None)):
        if raw.has(name):
            frame = pd.read_json(raw.open(name), lines=True, compression=compression, dtype=False)
            return frame if columns is None else frame.reindex(columns=columns)
    return None


def top_genre(genres: pd.Series) -> pd.Series:
    """{genre: votes} dicts -> the most-voted genre (ties by name), None for an empty dict."""
    return genres.map(lambda votes: min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0] if votes else None)


def _books_table(raw: RawFiles, suffix: str) -> pd.DataFrame:
    books = read_json_lines(raw, f"goodreads_books{suffix}", BOOK_COLUMNS)
    if books is None:
        raise FileNotFoundError(f"goodreads_books{suffix}.json[.gz] not found in {raw.source}")
    books["author_id"] = books["authors"].map(lambda a: a[0]["author_id"] if isinstance(a, list) and a else None)
    authors = read_json_lines(raw, "goodreads_book_authors", ["author_id", "name"])
    genres = read_json_lines(raw, "goodreads_book_genres_initial", ["book_id", "genres"])
    works = read_json_lines(raw, "goodreads_book_works", ["work_id", "media_type"])
    lookups = [
        (authors.rename(columns={"name": "author_name"}) if authors is not None else None, "author_id", "author_name"),
        (genres.assign(genres=top_genre(genres["genres"])) if genres is not None else None, "book_id", "genres"),
        (works, "work_id", "media_type"),
    ]
    for table, key, column in lookups:
        if table is None:
            books[column] = None
            continue
        books[column] = lookup(books[key], table, key, column)
    return books


def lookup(keys: pd.Series, table: pd.DataFrame, key: str, column: str) -> pd.Series:
    """`table[column]` at each of `keys` (matched as display strings; first row per key)."""
    mapping = table.assign(_key=as_display_strings(table[key])).drop_duplicates("_key").set_index("_key")[column]
    return as_display_strings(keys).map(mapping)


def build_goodreads(
    cache_dir: str | None = None, raw_path: str | os.PathLike | None = None, subset: str | None = None
) -> pd.DataFrame:
    if raw_path is None:
        raise FileNotFoundError("goodreads: pass raw_path= (a folder or zip holding the UCSD Goodreads JSON files)")
    raw = RawFiles(raw_path)
    suffix = f"_{subset}" if subset else "_dedup"
    interactions = read_json_lines(
        raw, f"goodreads_interactions{suffix}", ["user_id", "book_id", "rating", "date_added"]
    )
    if interactions is None:
        raise FileNotFoundError(f"goodreads_interactions{suffix}.json[.gz] not found in {raw.source}")
    interactions = interactions[pd.to_numeric(interactions["rating"], errors="coerce") > 0]
    interactions = interactions.assign(
        timestamp=pd.to_datetime(interactions["date_added"], format=DATE_FORMAT, utc=True).astype("int64") // 10**9,
        book_key=as_display_strings(interactions["book_id"]),
    )
    books = _books_table(raw, suffix if subset else "")
    books = (
        books.assign(book_key=as_display_strings(books["book_id"])).drop(columns="book_id").drop_duplicates("book_key")
    )
    frame = interactions.merge(books, on="book_key", how="left")
    frame = sort_for_split(frame, ["timestamp", "user_id", "book_key"])
    out = pd.DataFrame({"user_id": as_display_strings(frame["user_id"]), "book_id": frame["book_key"]})
    for name, _ in FIELDS[2:]:
        out[name] = as_display_strings(frame[name])
    out[LABEL] = (pd.to_numeric(frame["rating"]) >= 4).astype(np.int64)
    out["timestamp"] = frame["timestamp"].astype(np.int64)
    return out


GOODREADS = Recipe("goodreads", FIELDS, build_goodreads)
