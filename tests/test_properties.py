"""Property-based tests (hypothesis) of the schema and the processor, on the tiny WordPiece tokenizer of conftest.

Text comparison: the tiny tokenizer is an uncased BERT WordPiece with a character fallback over ASCII letters,
digits and punctuation; other characters become [UNK] and accents are stripped. So

- `test_field_tokens_are_the_value_tokens` draws values from all of Unicode (no surrogates) and compares token ids:
  the tokens marked with field f are exactly `tokenizer(value)` (BERT splits on spaces and punctuation, so a value
  tokenises the same alone and inside the prompt), [UNK]s included;
- `test_field_tokens_decode_to_the_value` draws from ASCII letters, digits, punctuation, spaces and accented Latin
  letters (no [UNK]) and compares the decoded text modulo the tokenizer's normalisation (lower case, accents
  stripped, spaces dropped).
"""

from __future__ import annotations

import string
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from processing import FieldSpec, FlipProcessor, PromptTemplate, TabularSchema
from processing.schema import FIELD_MASK_ID, normalize_values

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = ["title", "city", "code", "item"]  # "item" is hashed into 7 buckets
DECODABLE = string.ascii_letters + string.digits + string.punctuation + "  éÉàüñçÅ"

unicode_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
decodable_text = st.text(st.sampled_from(DECODABLE), max_size=30)
missing = st.sampled_from([None, float("nan"), "", "   "])
numbers = st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False, width=32))


def cell(text):
    return st.one_of(text, numbers, missing)


def rows_of(text, min_size=0, max_size=8):
    row = st.fixed_dictionaries({name: cell(text) for name in FIELDS})
    return st.lists(row, min_size=min_size, max_size=max_size)


def fitted_schema(train_rows: list[dict]) -> TabularSchema:
    specs = [FieldSpec(name, num_buckets=7 if name == "item" else None) for name in FIELDS]
    table = {name: [row[name] for row in train_rows] for name in FIELDS}
    return TabularSchema(specs, label_column=None).fit(table)


def make_processor(tokenizer, train_rows, max_length=512) -> FlipProcessor:
    return FlipProcessor(tokenizer, fitted_schema(train_rows), PromptTemplate(), max_length=max_length)


def _squash(text: str) -> str:
    """What an uncased WordPiece decode keeps: lower case, no accents, no whitespace."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c) and not c.isspace())


def field_tokens(encoded, i: int, f: int) -> list[int]:
    ids, index = np.asarray(encoded["input_ids"][i]), np.asarray(encoded["token_field_index"][i])
    return ids[index == f].tolist()


@SETTINGS
@given(rows=rows_of(unicode_text, min_size=1), max_length=st.sampled_from([16, 48, 512]))
def test_field_tokens_are_the_value_tokens(tiny_tokenizer, rows, max_length):
    """Each field's tokens are the value's own tokens; when they are not (cut by `max_length`), the value is
    counted in `num_truncated_values`, its tokens are a prefix of the value's, and every later field is cut too."""
    processor = make_processor(tiny_tokenizer, rows, max_length)
    encoded = processor(rows, return_truncation=True)
    texts, spans = processor.render({name: [row[name] for row in rows] for name in FIELDS})
    for i in range(len(rows)):
        assert len(encoded["input_ids"][i]) <= max_length
        cut, spelled = [], []  # fields whose tokens were cut; fields with at least one token
        for f in range(len(FIELDS)):
            value = texts[i][slice(*spans[i, f])]
            expected = tiny_tokenizer(value, add_special_tokens=False)["input_ids"]
            got = field_tokens(encoded, i, f)
            spelled += [f] if expected else []  # e.g. a private-use or control character has no token at all
            if got != expected:
                assert expected[: len(got)] == got, (value, got, expected)
                cut.append(f)
        assert len(cut) <= encoded["num_truncated_values"][i]
        assert cut == spelled[len(spelled) - len(cut) :]  # right truncation: a suffix of the fields
        if max_length == 512:
            assert encoded["num_truncated_values"][i] == 0 and not cut


@SETTINGS
@given(rows=rows_of(unicode_text, min_size=1), max_length=st.sampled_from([8, 16, 48, 512]))
@example(  # found by CI: a value ending in a control character (no token) right before the cut is not truncated
    rows=[dict.fromkeys(FIELDS, ""), {"title": "0", "city": "0", "code": "0\x1b", "item": ""}], max_length=16
)
def test_spliced_tokens_equal_full_tokenisation(tiny_tokenizer, rows, max_length):
    """Splicing cached value tokens (`processing.spliced_tokens`) reproduces the full texts' ids, field index,
    lengths and truncation counts for any Unicode values."""
    processor = make_processor(tiny_tokenizer, rows, max_length)
    columns = {name: [row[name] for row in rows] for name in FIELDS}
    values = processor.prompt_template.values(FIELDS, [columns[name] for name in FIELDS])
    spliced, full = processor._splicer().encode(values), processor._tokenize_texts(columns)
    for name, got, expected in zip(spliced._fields, spliced, full):
        np.testing.assert_array_equal(got, expected, err_msg=name)


@SETTINGS
@given(rows=rows_of(decodable_text, min_size=1))
def test_field_tokens_decode_to_the_value(tiny_tokenizer, rows):
    processor = make_processor(tiny_tokenizer, rows)
    encoded = processor(rows)
    values = [normalize_values([row[name] for row in rows], name) for name in FIELDS]
    for i in range(len(rows)):
        for f in range(len(FIELDS)):
            value = values[f][i] or processor.prompt_template.missing_value
            decoded = tiny_tokenizer.decode(field_tokens(encoded, i, f))
            assert "[UNK]" not in decoded
            assert _squash(decoded) == _squash(value), (value, decoded)


@SETTINGS
@given(train=rows_of(unicode_text, min_size=1), test=rows_of(unicode_text))
def test_field_ids_stay_in_range_and_train_values_are_known(tiny_tokenizer, train, test):
    processor = make_processor(tiny_tokenizer, train)
    schema = processor.schema
    sizes = np.asarray(schema.field_vocab_sizes)
    for rows in (train, test):
        ids = np.asarray(processor(rows)["field_ids"], dtype=np.int64).reshape(len(rows), len(FIELDS))
        assert ((ids > FIELD_MASK_ID) & (ids < sizes)).all()
    train_ids = np.asarray(processor(train)["field_ids"])
    for f, name in enumerate(FIELDS):
        present = np.asarray([bool(v) for v in normalize_values([row[name] for row in train], name)])
        assert (train_ids[present, f] >= 2).all()  # a train value is never OOV (min_count=1)
        assert (train_ids[~present, f] == 1).all()  # a missing value always is
    assert len(schema.feature_counts()) == sizes.sum()
    assert sum(schema.feature_counts()) == sum(
        bool(v) for name in FIELDS for v in normalize_values([row[name] for row in train])
    )


@SETTINGS
@given(rows=rows_of(unicode_text, min_size=1), max_length=st.sampled_from([24, 512]))
def test_batched_single_row_and_input_forms_agree(tiny_tokenizer, rows, max_length):
    processor = make_processor(tiny_tokenizer, rows, max_length)
    columns = {name: [row[name] for row in rows] for name in FIELDS}
    batched = dict(processor(columns, return_truncation=True))
    for i, row in enumerate(rows):
        single = processor({name: [value] for name, value in row.items()}, return_truncation=True)
        assert {key: value[i] for key, value in batched.items()} == {key: value[0] for key, value in single.items()}
    assert dict(processor(rows, return_truncation=True)) == batched
    assert dict(processor(pd.DataFrame(columns, dtype=object), return_truncation=True)) == batched
    padded = processor(columns, return_tensors="np")
    for i in range(len(rows)):
        n = len(batched["input_ids"][i])
        assert padded["input_ids"][i, :n].tolist() == batched["input_ids"][i]
        assert padded["token_field_index"][i, :n].tolist() == batched["token_field_index"][i]
        assert (padded["token_field_index"][i, n:] == -1).all() and padded["attention_mask"][i].sum() == n


@SETTINGS
@given(values=st.lists(cell(unicode_text), max_size=30), buckets=st.integers(1, 50))
def test_hashing_is_stable_bounded_and_order_free(values, buckets):
    spec = FieldSpec("item", num_buckets=buckets).fit(values)
    ids = spec.encode(values)
    assert ((ids >= 1) & (ids < spec.vocab_size)).all() and spec.vocab_size == buckets + 2
    assert (FieldSpec("item", num_buckets=buckets).encode(values[::-1]) == ids[::-1]).all()
    strings = normalize_values(values)
    assert sum(spec.counts) == sum(map(bool, strings))
    assert ((ids == 1) == np.asarray([not s for s in strings], dtype=bool)).all()


@pytest.mark.parametrize("value", ["21", 21, 21.0, np.int32(21), " 21", np.float64(21.0)])
def test_number_forms_hash_to_the_same_bucket(value):
    assert FieldSpec("n", num_buckets=97).encode([value])[0] == FieldSpec("n", num_buckets=97).encode(["21"])[0]
