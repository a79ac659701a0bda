import json

import numpy as np
import pytest

from processing.schema import FIELD_MASK_ID, FIELD_OOV_ID, FieldSpec, TabularSchema, normalize_values, stable_hash


def test_normalize_values_treats_numbers_as_strings_and_empties_as_missing():
    assert normalize_values([21, 21.0, " 21 ", "21", None, float("nan"), "", 2.5]) == [
        "21",
        "21",
        "21",
        "21",
        "",
        "",
        "",
        "2.5",
    ]
    assert normalize_values(np.array([3, 4])) == ["3", "4"]


def test_fit_orders_by_count_then_value_and_reserves_two_ids():
    spec = FieldSpec("city").fit(["b", "a", "c", "a", "b", None, ""])
    assert spec.vocab == ["a", "b", "c"] and spec.counts == [2, 2, 1]
    assert spec.vocab_size == 5
    assert spec.encode(["a", "b", "c", "zzz", None, "", 1.0]).tolist() == [2, 3, 4, 1, 1, 1, 1]
    assert FIELD_MASK_ID == 0 and FIELD_OOV_ID == 1


def test_min_count_sends_rare_values_to_oov():
    spec = FieldSpec("x", min_count=2).fit(["a", "a", "b"])
    assert spec.vocab == ["a"] and spec.encode(["b"]).tolist() == [FIELD_OOV_ID]


def test_hash_buckets_are_stable_and_counted():
    spec = FieldSpec("user", num_buckets=7).fit(["u1", "u2", "u1"])
    assert spec.vocab_size == 9 and sum(spec.counts) == 3
    ids = spec.encode(["u1", "never-seen", None])
    assert ids.tolist() == [2 + stable_hash("u1") % 7, 2 + stable_hash("never-seen") % 7, FIELD_OOV_ID]
    assert stable_hash("u1") == 1112514422  # crc32: identical in every process


def _schema():
    table = {"user": ["1", "2", "1"], "item": [10, 11, 12], "label": [1, 0, 1]}
    schema = TabularSchema([FieldSpec("user", "user id"), FieldSpec("item")], time_column="ts")
    return schema.fit(table)


def test_offsets_feature_counts_and_oov_counting():
    schema = _schema()
    assert schema.field_vocab_sizes == [4, 5]
    assert schema.offsets == [0, 4]
    assert schema.feature_counts() == [0, 0, 2, 1, 0, 0, 1, 1, 1]
    ids = schema.encode({"user": ["1", "9", None], "item": ["10", "10", "99"]})
    assert ids.shape == (3, 2) and ids.dtype == np.int64
    assert ids.tolist() == [[2, 2], [1, 2], [1, 1]]
    assert schema.oov_counts == {"user": 2, "item": 1}


def test_fit_reports_missing_columns():
    with pytest.raises(ValueError, match=r"\['item'\]"):
        TabularSchema([FieldSpec("user"), FieldSpec("item")]).fit({"user": ["a"]})


def test_json_round_trip_keeps_field_order(tmp_path):
    schema = TabularSchema([FieldSpec("z"), FieldSpec("a"), FieldSpec("m")]).fit({"z": [1], "a": [2], "m": [3]})
    path = tmp_path / "schema.json"
    schema.save(str(path))
    json.loads(path.read_text())  # plain JSON
    loaded = TabularSchema.load(str(path))
    assert loaded == schema and loaded.field_names == ["z", "a", "m"]
    assert loaded.encode({"z": [1], "a": [2], "m": [4]}).tolist() == [[2, 2, 1]]


def test_check_compatible_names_the_difference():
    schema = _schema()
    schema.check_compatible({"field_names": ["user", "item"], "field_vocab_sizes": [4, 5]})
    with pytest.raises(ValueError, match="field_vocab_sizes.*\\(1, 6, 5\\)"):
        schema.check_compatible({"field_names": ["user", "item"], "field_vocab_sizes": [4, 6]})
    with pytest.raises(ValueError, match="field_names.*lengths 3 vs 2"):
        schema.check_compatible(type("Cfg", (), {"field_names": ["user", "item", "x"]})())
