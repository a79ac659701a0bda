"""Book-Crossing (BX-Users.csv, BX-Books.csv, BX-Book-Ratings.csv: `;`-separated, latin-1, quoted, `\\"` escapes).

8 fields: user id, location, age, isbn, book title, author, publication year, publisher. Only explicit ratings
(1-10) are kept, the implicit 0 ratings are dropped; label = rating >= 5. Ratings of ISBNs missing from BX-Books
are dropped (no book fields). The data has no time column: the split follows file order (PROTOCOL.md).
The original host is offline, so `raw_path` (the BX-CSV-Dump.zip or a folder with the three files) is required.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .base import LABEL, Recipe, as_display_strings
from .raw import RawFiles

FIELDS = [
    ("user_id", "user id"),
    ("location", "location"),
    ("age", "age"),
    ("isbn", "isbn"),
    ("book_title", "book title"),
    ("author", "author"),
    ("year", "publication year"),
    ("publisher", "publisher"),
]
MISSING_MARKERS = ["NULL", "0", "N/A", "n/a"]


def read_bx_csv(raw: RawFiles, name: str) -> pd.DataFrame:
    """One BX table as strings: `;` separator, `"` quotes, backslash escapes, latin-1."""
    return pd.read_csv(
        raw.open(name), sep=";", quotechar='"', escapechar="\\", encoding="latin-1", dtype=str, keep_default_na=False
    )


def build_bookcrossing(cache_dir: str | None = None, raw_path: str | os.PathLike | None = None) -> pd.DataFrame:
    if raw_path is None:
        raise FileNotFoundError("bookcrossing: pass raw_path= (BX-CSV-Dump.zip or a folder with the BX-*.csv files)")
    raw = RawFiles(raw_path)
    ratings = read_bx_csv(raw, "BX-Book-Ratings.csv").set_axis(["user_id", "isbn", "rating"], axis=1)
    users = read_bx_csv(raw, "BX-Users.csv").iloc[:, :3].set_axis(["user_id", "location", "age"], axis=1)
    books = read_bx_csv(raw, "BX-Books.csv").iloc[:, :5]
    books.columns = ["isbn", "book_title", "author", "year", "publisher"]
    ratings["rating"] = pd.to_numeric(ratings["rating"], errors="coerce")
    ratings = ratings[ratings["rating"] > 0]
    frame = ratings.merge(books.drop_duplicates("isbn"), on="isbn", how="inner", sort=False)
    frame = frame.merge(users.drop_duplicates("user_id"), on="user_id", how="left", sort=False)
    out = pd.DataFrame({name: as_display_strings(frame[name]) for name, _ in FIELDS})
    for name in ("age", "year"):
        out[name] = out[name].where(~out[name].isin(MISSING_MARKERS), None)
    out[LABEL] = (frame["rating"] >= 5).astype(np.int64).to_numpy()
    return out


BOOKCROSSING = Recipe("bookcrossing", FIELDS, build_bookcrossing, time_column=None)
