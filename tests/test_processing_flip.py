import copy
import os
import subprocess
import sys
import unicodedata
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from transformers import AutoProcessor

from processing import FlipProcessor, PromptTemplate, check_compatible
from processing.schema import FIELD_OOV_ID, TabularSchema
from tests import test_pipeline
from tests._data_fixtures import (  # noqa: F401 (fixtures)
    GOLDEN_PROMPT,
    GOLDEN_ROW,
    ML_FIELDS,
    bpe_tokenizer,
    bpe_untrimmed_tokenizer,
    minilm_tokenizer,
    ml_rows,
    ml_schema,
)

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture


def _processor(tokenizer, max_length=128, **schema_kw):
    schema = ml_schema()
    for key, value in schema_kw.items():
        setattr(schema, key, value)
    return FlipProcessor(tokenizer, schema, PromptTemplate(), max_length=max_length)


def _squash(text: str) -> str:
    """Lower-cased, accent- and space-free form: what an uncased WordPiece decode preserves."""
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c) and not c.isspace())


def _assert_aligned(processor, rows, enc, wordpiece: bool):
    """Decode the tokens of every field back to its value (complete values only)."""
    tok = processor.tokenizer
    texts, spans = processor.render(rows)
    for i, (ids, index) in enumerate(zip(enc["input_ids"], enc["token_field_index"])):
        ids, index = np.asarray(ids), np.asarray(index)
        assert len(ids) == len(index)
        assert index[0] == -1 and index[-1] == -1  # special tokens
        full = tok(texts[i], truncation=True, max_length=processor.max_length, return_offsets_mapping=True)
        kept_until = max(end for _, end in full["offset_mapping"])
        for f, (start, end) in enumerate(spans[i].tolist()):
            value, decoded = texts[i][start:end], tok.decode(ids[index == f].tolist())
            if end <= kept_until:
                if wordpiece:
                    assert _squash(decoded) == _squash(value), (i, f, decoded, value)
                else:  # byte-level BPE may glue the separator "." onto a value ending in punctuation, e.g. ")."
                    assert decoded.strip() in (value, value + "."), (i, f, decoded, value)
            else:
                assert _squash(value).startswith(_squash(decoded).rstrip(".")), (i, f, decoded, value)


def test_golden_row_outputs(tiny_tokenizer):
    proc = _processor(tiny_tokenizer)
    enc = proc([GOLDEN_ROW])
    assert proc.render({k: [v] for k, v in GOLDEN_ROW.items()})[0] == [GOLDEN_PROMPT]
    assert set(enc) == {"input_ids", "attention_mask", "token_field_index", "field_ids", "labels"}
    assert enc["labels"] == [1] and len(enc["field_ids"][0]) == 8
    assert enc["field_ids"][0][0] == FIELD_OOV_ID  # user 259 unseen in the fitted rows
    _assert_aligned(proc, {k: [v] for k, v in GOLDEN_ROW.items()}, enc, wordpiece=True)


@pytest.mark.parametrize("name", ["tiny_tokenizer", "minilm_tokenizer"])
def test_alignment_wordpiece(name, request):
    proc = _processor(request.getfixturevalue(name))
    rows = ml_rows(40, offset=5)
    rows["title"][3] = "Ça, c'est l'été 42"
    rows["occupation"][4] = None
    _assert_aligned(proc, rows, proc(rows), wordpiece=True)


@pytest.mark.parametrize("name", ["bpe_tokenizer", "bpe_untrimmed_tokenizer"])
def test_alignment_byte_level_bpe(name, request):
    tok = request.getfixturevalue(name)
    proc = _processor(tok)
    rows = ml_rows(40)
    enc = proc(rows)
    _assert_aligned(proc, rows, enc, wordpiece=False)
    if name == "bpe_untrimmed_tokenizer":  # offsets really include the leading space here
        offsets = tok(proc.render(rows)[0][0], return_offsets_mapping=True)["offset_mapping"]
        assert any(proc.render(rows)[0][0][s] == " " for s, e in offsets if e > s)


@pytest.mark.parametrize("name", ["tiny_tokenizer", "bpe_tokenizer"])
def test_truncation_keeps_alignment_and_counts_cut_values(name, request):
    proc = _processor(request.getfixturevalue(name), max_length=24)
    rows = ml_rows(20)
    enc = proc(rows, return_truncation=True)
    assert max(map(len, enc["input_ids"])) <= 24
    _assert_aligned(proc, rows, enc, wordpiece=name == "tiny_tokenizer")
    cut = enc["num_truncated_values"]
    assert all(c > 0 for c in cut)
    assert proc.stats["truncated_values"] == sum(cut) and proc.stats["truncated_rows"] == 20
    # a value with no token left is counted as cut
    assert all(len(set(t) - {-1}) >= 8 - c for t, c in zip(enc["token_field_index"], cut))


def test_input_forms_agree_and_no_token_type_ids(tiny_tokenizer):
    proc = _processor(tiny_tokenizer)
    rows = ml_rows(6)
    by_columns = dict(proc(rows))
    listed = [dict(zip(rows, values)) for values in zip(*rows.values())]
    assert dict(proc(listed)) == by_columns
    assert dict(proc(pd.DataFrame(rows))) == by_columns
    assert "token_type_ids" not in by_columns


def test_return_tensors_pads_field_index_with_minus_one(tiny_tokenizer):
    proc = _processor(tiny_tokenizer)
    rows = ml_rows(4)
    rows["title"][0] = "a very long title indeed with many words"
    enc = proc(rows, return_tensors="pt")
    assert enc["input_ids"].shape == enc["token_field_index"].shape
    assert (enc["token_field_index"][enc["attention_mask"] == 0] == -1).all()
    assert enc["field_ids"].shape == (4, 8) and enc["labels"].tolist() == [0, 1, 0, 1]


def test_missing_columns_are_named(tiny_tokenizer):
    rows = ml_rows(2)
    del rows["genre"], rows["age"]
    with pytest.raises(ValueError, match=r"\['age', 'genre'\]"):
        _processor(tiny_tokenizer)(rows)


def test_unlabelled_rows_have_no_labels(tiny_tokenizer):
    rows = ml_rows(2)
    del rows["label"]
    assert "labels" not in _processor(tiny_tokenizer)(rows)


@pytest.mark.parametrize(
    ("labels", "threshold", "message"),
    [
        ([1, float("nan")], None, r"1 of 2 rows are NaN or missing \(e.g. nan in rows \[1\]"),
        ([1, 3], None, "not 0/1.*set label_threshold"),
        (["yes", "no"], 4, r"2 of 2 rows are not numbers.*positive_labels: \['yes'\]"),
        ([5, None], 4, r"1 of 2 rows are NaN or missing \(e.g. None in rows \[1\]"),
    ],
)
def test_bad_labels_raise(tiny_tokenizer, labels, threshold, message):
    rows = dict(ml_rows(2), label=labels)
    with pytest.raises(ValueError, match=f"'label'.*{message}"):
        _processor(tiny_tokenizer, label_threshold=threshold)(rows)


def test_label_threshold_binarises_ratings(tiny_tokenizer):
    rows = dict(ml_rows(4), rating=[1, 3, 4, 5.0])
    proc = _processor(tiny_tokenizer, label_column="rating", label_threshold=4)
    assert proc(rows)["labels"] == [0, 0, 1, 1]


def test_save_load_round_trip_and_auto_processor(tmp_path, tiny_tokenizer):
    proc = _processor(tiny_tokenizer, max_length=40)
    proc.prompt_template.separator = "; "
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "flip_schema.json").exists() and (tmp_path / "processing_flip.py").exists()
    rows = ml_rows(10, offset=3)
    expected = dict(proc(rows, return_truncation=True))
    for loaded in (
        FlipProcessor.from_pretrained(tmp_path),
        AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True),
    ):
        assert type(loaded).__name__ == "FlipProcessor"
        assert loaded.schema.to_dict() == proc.schema.to_dict() and loaded.schema.field_names == ML_FIELDS
        assert loaded.max_length == 40 and loaded.prompt_template.separator == "; "
        assert dict(loaded(rows, return_truncation=True)) == expected
        assert "schema" not in loaded.tokenizer.init_kwargs
    loaded.save_pretrained(tmp_path / "again")  # a loaded processor saves and reloads the same
    assert dict(FlipProcessor.from_pretrained(tmp_path / "again")(rows, return_truncation=True)) == expected


HIDDEN_IDS = ["user_id", "zip_code", "movie_id"]


@pytest.mark.parametrize("splice", [True, False])
def test_hidden_fields_leave_the_text_and_keep_their_ids(tmp_path, tiny_tokenizer, splice):
    """Hidden fields write no text and own no token; the other fields' tokens carry their schema positions; the
    IDs are the default template's; the option survives save/load."""
    default = _processor(tiny_tokenizer)
    hidden = FlipProcessor(tiny_tokenizer, ml_schema(), PromptTemplate(hidden_fields=HIDDEN_IDS))
    hidden.splice_tokens = splice
    golden = {k: [v] for k, v in GOLDEN_ROW.items()}
    assert hidden.render(golden)[0] == [
        "gender is male. age is 21. occupation is student. title is My Best Friend's Wedding (1997). genre is Comedy."
    ]
    rows = ml_rows(20)
    enc = hidden(rows)
    assert getattr(hidden, "_splice_verified", False) == splice  # the spliced path ran (and matched the full one)
    assert enc["field_ids"] == default(rows)["field_ids"]
    text_fields = [f for f, name in enumerate(ML_FIELDS) if name not in HIDDEN_IDS]
    for ids, index, title in zip(enc["input_ids"], enc["token_field_index"], rows["title"]):
        index = np.asarray(index)
        assert set(index.tolist()) == {-1, *text_fields}
        decoded = tiny_tokenizer.decode(np.asarray(ids)[index == ML_FIELDS.index("title")].tolist())
        assert _squash(decoded) == _squash(title)
    hidden.save_pretrained(tmp_path)
    loaded = FlipProcessor.from_pretrained(tmp_path)
    assert loaded.prompt_template.hidden_fields == HIDDEN_IDS
    assert dict(loaded(rows)) == dict(enc)


def test_processor_against_other_schema_gives_clear_errors(tiny_tokenizer):
    proc = _processor(tiny_tokenizer)
    other = {"field_names": ["user_id", "movie_id"], "field_vocab_sizes": [10, 20]}
    with pytest.raises(ValueError, match="field_names"):
        check_compatible(other, proc)
    check_compatible({"field_names": ML_FIELDS, "field_vocab_sizes": proc.schema.field_vocab_sizes}, proc)
    book_schema = TabularSchema.from_dict({"fields": [{"name": "isbn"}, {"name": "book_title"}]})
    with pytest.raises(ValueError, match=r"missing the schema columns \['isbn', 'book_title'\]"):
        FlipProcessor(tiny_tokenizer, book_schema)(ml_rows(2))


def test_empty_batch_and_left_padding(tiny_tokenizer):
    assert dict(_processor(tiny_tokenizer)({k: [] for k in ml_rows(1)}))["input_ids"] == []
    left = copy.deepcopy(tiny_tokenizer)
    left.padding_side = "left"
    rows = ml_rows(3)
    rows["title"][1] = "a much longer title than the others"
    enc, plain = _processor(left)(rows, return_tensors="np"), _processor(left)(rows)
    for i in range(3):
        n = len(plain["input_ids"][i])
        assert enc["input_ids"][i, -n:].tolist() == plain["input_ids"][i]
        assert enc["token_field_index"][i, -n:].tolist() == plain["token_field_index"][i]
        assert (enc["token_field_index"][i, :-n] == -1).all() and enc["attention_mask"][i].sum() == n


@pytest.mark.parametrize("name", ["tiny_tokenizer", "minilm_tokenizer"])
@pytest.mark.parametrize("max_length", [24, 128])
def test_spliced_tokens_equal_full_tokenisation(name, max_length, request):
    """WordPiece: the prompts spliced from cached value tokens are the full texts' tokens, alignment and truncation
    counts included (after a cache reset too); the splicer was really used."""
    spliced = _processor(request.getfixturevalue(name), max_length=max_length)
    full = copy.deepcopy(spliced)
    full.splice_tokens = False
    rows = ml_rows(40)
    for batch in (rows, ml_rows(40, offset=40), rows):  # the third batch is served from the cache
        a, b = spliced(batch, return_truncation=True), full(batch, return_truncation=True)
        assert {k: list(v) for k, v in a.items()} == {k: list(v) for k, v in b.items()}
    assert spliced._splice_verified and spliced.splice_tokens and spliced._splicer() is not None
    assert full._splicer() is not None and not full._splice_verified  # built, never used


def test_spliced_cache_starts_over_when_full(tiny_tokenizer, monkeypatch):
    from processing import spliced_tokens

    monkeypatch.setattr(spliced_tokens, "MAX_CACHED_VALUES", 90)  # one batch holds 5 x 8 = 40 values
    processor = _processor(tiny_tokenizer)
    reference = copy.deepcopy(processor)
    reference.splice_tokens = False
    sizes = []
    for offset in range(0, 50, 5):
        rows = ml_rows(5, offset=offset)
        assert processor(rows)["input_ids"] == reference(rows)["input_ids"]
        sizes.append(len(processor._splicer().cache))
    assert max(sizes) <= 90 and any(b < a for a, b in pairwise(sizes))  # bounded: it started over


@pytest.mark.parametrize(
    "template",
    [PromptTemplate(pattern="{name}{value}"), PromptTemplate(pattern="{value}", separator="")],
    ids=["glued-name", "glued-values"],
)
def test_no_splicing_where_it_would_not_be_exact(tiny_tokenizer, request, template):
    """Byte-level BPE (the space before a word is part of its token) and templates without a split character at a
    value boundary tokenise the full texts."""
    assert _processor(request.getfixturevalue("bpe_tokenizer"))._splicer() is None
    glued = FlipProcessor(tiny_tokenizer, ml_schema(), template, max_length=64)
    assert glued._splicer() is None
    assert glued(ml_rows(3))["input_ids"] == [glued.tokenizer(t)["input_ids"] for t in glued.render(ml_rows(3))[0]]


def test_splice_mismatch_switches_splicing_off(tiny_tokenizer, monkeypatch):
    """Safety net: if the spliced tokens of the first batch differ from the full tokenisation, the processor warns,
    returns the full tokenisation and stops splicing."""
    from processing.spliced_tokens import SplicedTokenizer

    processor = _processor(tiny_tokenizer)
    reference = copy.deepcopy(processor)
    reference.splice_tokens = False
    encode = SplicedTokenizer.encode
    monkeypatch.setattr(
        SplicedTokenizer, "encode", lambda self, v: encode(self, v)._replace(input_ids=encode(self, v).input_ids + 1)
    )
    rows = ml_rows(5)
    assert processor(rows)["input_ids"] == reference(rows)["input_ids"]
    assert processor.splice_tokens is False


def test_processor_of_a_model_folder_loads_without_prompt_or_remote_code(tiny_ctr_dirs):
    """Issue 15 items 2 and 17: with the package, a model folder's processor loads in a fresh interpreter without
    `import modeling_flip`, without `trust_remote_code` and without the "run the custom code? [y/N]" prompt
    (`AutoProcessor` after `import processing`: tests/test_readme.py)."""
    code = "from processing import FlipProcessor; FlipProcessor.from_pretrained(FOLDER)"
    script = f"FOLDER = {tiny_ctr_dirs['joint']!r}\n{code}\nprint('loaded')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", script]
    result = subprocess.run(
        command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("loaded"), result.stderr[-2000:]
    assert "custom code" not in result.stdout + result.stderr
