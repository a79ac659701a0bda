"""Reliability (issue 8): bad inputs, untrusted / damaged files, schema mismatches, crash safety, determinism.

Every bad input either raises an error that names the field / column / file and the fix, or takes a documented,
counted fallback (OOV, `num_truncated_values`); never a silently wrong row. RELIABILITY.md lists the outcomes.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
import yaml

from processing import FieldSpec, FlipProcessor, PromptTemplate
from processing.datasets import load_ctr_dataset
from processing.prepare import prepare_dataset
from processing.schema import FIELD_OOV_ID, TabularSchema
from tests._data_fixtures import ML_FIELDS, ml_rows, ml_schema
from training.predict import iter_chunks

# ---------------------------------------------------------------------------------------------------------------
# 1. bad inputs: the processor
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def processor(tiny_tokenizer) -> FlipProcessor:
    return FlipProcessor(tiny_tokenizer, ml_schema(), PromptTemplate(), max_length=64)


def _row(**changes) -> dict[str, list]:
    row = ml_rows(1, offset=2)
    row.update({key: [value] for key, value in changes.items()})
    return row


MISSING_VALUES = {"None": None, "NaN": float("nan"), "empty": "", "blank": "   ", "pd.NA": pd.NA, "NaT": pd.NaT}


@pytest.mark.parametrize("kind", list(MISSING_VALUES))
@pytest.mark.parametrize("field", ML_FIELDS)
def test_missing_value_in_any_field_is_a_counted_oov(processor, field, kind):
    """Fallback: a missing value -> that field's OOV id, rendered as `missing_value`, counted per field."""
    processor.schema.oov_counts.clear()
    encoded = processor(_row(**{field: MISSING_VALUES[kind]}))
    f = ML_FIELDS.index(field)
    assert encoded["field_ids"][0][f] == FIELD_OOV_ID
    assert [i for i, v in enumerate(encoded["field_ids"][0]) if v == FIELD_OOV_ID] == [f]
    assert dict(processor.schema.oov_counts) == {field: 1}
    text, spans = processor.render(_row(**{field: MISSING_VALUES[kind]}))
    assert text[0][slice(*spans[0, f])] == processor.prompt_template.missing_value


def test_unseen_category_is_a_counted_oov(processor):
    processor.schema.oov_counts.clear()
    encoded = processor(_row(genre="Space Opera", user_id="999999"))
    assert [encoded["field_ids"][0][ML_FIELDS.index(f)] for f in ("genre", "user_id")] == [FIELD_OOV_ID] * 2
    assert dict(processor.schema.oov_counts) == {"genre": 1, "user_id": 1}


@pytest.mark.parametrize(
    "value",
    [21, 21.0, np.int64(21), np.float32(21.0), "21", " 21 ", np.uint8(21)],
    ids=["int", "float", "np.int64", "np.float32", "str", "padded-str", "np.uint8"],
)
def test_numbers_in_any_dtype_encode_like_their_string(processor, value):
    """ints, integral floats (21.0, as pandas makes of an int column with NaN) and strings of the same number agree."""
    expected = processor(_row(age="21"))
    got = processor(_row(age=value))
    assert got["field_ids"] == expected["field_ids"] and got["input_ids"] == expected["input_ids"]


def test_nullable_integer_frame_column(processor):
    """pandas `Int64` columns yield `pd.NA` for missing cells: missing (OOV + "unknown"), not the category '<NA>'."""
    frame = pd.DataFrame(ml_rows(3))
    frame["age"] = pd.array([18, None, 20], dtype="Int64")
    encoded = processor(frame)
    texts, _ = processor.render(frame)
    assert encoded["field_ids"][1][ML_FIELDS.index("age")] == FIELD_OOV_ID
    assert "age is unknown." in texts[1] and "<NA>" not in texts[1]
    assert encoded["field_ids"][0] == processor(dict(ml_rows(3)))["field_ids"][0]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"genre": ["Comedy", "Drama"]}, TypeError, r"Field 'genre': got a list value .*flatten or join"),
        ({"title": {"a": 1}}, TypeError, r"Field 'title': got a dict value"),
        ({"title": np.arange(3)}, TypeError, r"Field 'title': got a ndarray value"),
        ({"title": b"\xff\xfe"}, ValueError, r"Field 'title': bytes value .* is not UTF-8"),
        ({"label": 2}, ValueError, r"'label'.*not 0/1"),
        ({"label": -1}, ValueError, r"'label'.*not 0/1"),
        ({"label": 0.5}, ValueError, r"'label'.*not 0/1"),
        ({"label": float("inf")}, ValueError, r"'label'.*not 0/1"),
        ({"label": "yes"}, ValueError, r"'label'.*not numbers"),
    ],
    ids=["list", "dict", "array", "bad-bytes", "label-2", "label-neg", "label-half", "label-inf", "label-str"],
)
def test_wrong_value_types_raise_naming_the_field(processor, changes, error, message):
    with pytest.raises(error, match=message):
        processor(_row(**changes))


def test_utf8_bytes_are_decoded(processor):
    assert processor(_row(genre=b"Comedy"))["field_ids"] == processor(_row(genre="Comedy"))["field_ids"]


def test_ragged_columns_and_missing_columns_raise(processor):
    rows = ml_rows(3)
    rows["age"] = rows["age"][:2]
    with pytest.raises(ValueError, match=r"different lengths .*'age': 2"):
        processor(rows)
    with pytest.raises(ValueError, match=r"missing the schema columns \['title'\]"):
        processor({k: v for k, v in ml_rows(2).items() if k != "title"})


def test_extra_columns_are_ignored_and_duplicates_encode_identically(processor):
    rows = ml_rows(2)
    doubled = {k: v + v for k, v in rows.items()}
    extra = dict(doubled, comment=["x", None, 3, "y"], timestamp=[1, 2, 3, 4])
    out = processor(extra)
    assert dict(out) == dict(processor(doubled))
    for key in ("input_ids", "field_ids", "token_field_index", "labels"):
        assert out[key][:2] == out[key][2:]


@pytest.mark.parametrize(
    ("value", "truncated"),
    [
        ("Amélie (2001)", 0),
        ("東京物語 (1953)", 0),
        ("😀 emoji title", 0),
        ("a. is b. c", 0),
        ("tab\tand\nnewline", 0),
        ("x" * 5000, 0),  # one WordPiece word over 100 characters: a single [UNK] token, nothing cut
        ("many words " * 500, 2),  # the title and the genre after it are cut by max_length
    ],
    ids=["accents", "cjk", "emoji", "template-words", "whitespace", "long-word", "very-long"],
)
def test_unicode_and_long_values_keep_ids_and_report_truncation(tiny_tokenizer, value, truncated):
    """Values are compared as (stripped) strings, whatever the script; a value cut by max_length is reported."""
    rows = ml_rows(4)
    rows["title"][1] = value
    schema = ml_schema(rows)
    processor = FlipProcessor(tiny_tokenizer, schema, PromptTemplate(), max_length=512)
    encoded = processor(rows, return_truncation=True)
    title = ML_FIELDS.index("title")
    assert encoded["field_ids"][1][title] == schema.fields[title].encode([value])[0] > FIELD_OOV_ID
    assert all(len(ids) <= 512 for ids in encoded["input_ids"])
    tokens = np.asarray(encoded["token_field_index"][1])
    assert encoded["num_truncated_values"][1] == processor.stats["truncated_values"] == truncated
    assert (tokens == title).any()  # the value keeps at least its first tokens (possibly [UNK])


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
@pytest.mark.parametrize("key", ["num_buckets", "min_count"])
def test_field_spec_rejects_bad_bucket_and_count_options(key, bad):
    with pytest.raises(ValueError, match=f"Field 'item': {key} must be a positive integer, got {bad!r}"):
        FieldSpec("item", **{key: bad})


# ---------------------------------------------------------------------------------------------------------------
# 1. bad inputs: the generic table recipe (schema file + CSV / JSONL)
# ---------------------------------------------------------------------------------------------------------------


def _table(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": [f"u{i % 5}" for i in range(n)],
            "zip": ["02139" if i % 2 else "10001" for i in range(n)],
            "age": pd.array([20 + i % 3 if i % 4 else None for i in range(n)], dtype=object),
            "label": [i % 2 for i in range(n)],
            "ts": [(n - i) * 10 for i in range(n)],
        }
    )


def _write(tmp_path, frame: pd.DataFrame | None = None, fmt: str = "csv", **schema) -> str:
    frame = _table() if frame is None else frame
    if fmt == "csv":
        frame.to_csv(tmp_path / "rows.csv", index=False)
    else:
        frame.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    config = {
        "data_files": f"rows.{fmt}",
        "fields": ["user", "zip", "age"],
        "label_column": "label",
        "time_column": "ts",
    }
    config.update(schema)
    config = {k: v for k, v in config.items() if v is not None}
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "table.yaml")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"fields": ["user", {"name": "zip", "num_bucket": 8}]}, r"field 'zip': unknown key 'num_bucket'"),
        ({"lable_column": "label"}, r"unknown key 'lable_column'"),
        ({"label_column": None}, r"missing key 'label_column'"),
        ({"fields": []}, r"'fields' must be a non-empty list"),
        ({"fields": ["user", "user"]}, r"field 'user' is listed twice"),
        ({"fields": [{"display_name": "x"}]}, r"has no 'name'"),
        ({"label_threshold": "4"}, r"label_threshold must be a number"),
        ({"fields": ["user", {"name": "zip", "num_buckets": 0}]}, r"Field 'zip': num_buckets must be a positive"),
        ({"time_column": "when"}, r"missing the columns \['when'\]"),
    ],
    ids=["field-typo", "key-typo", "no-label", "no-fields", "duplicate", "nameless", "threshold", "buckets", "column"],
)
def test_malformed_schema_files_name_the_file_and_key(tmp_path, schema, message):
    with pytest.raises(ValueError, match=message):
        load_ctr_dataset(_write(tmp_path, **schema))


@pytest.mark.parametrize(
    ("labels", "threshold", "message"),
    [
        ([0, 1, 2], None, r"'label': 1 of 20 rows are not 0/1"),
        ([0, 1, np.nan], None, r"'label': 1 of 20 rows are NaN or missing"),
        ([0, 1, "yes"], None, r"'label': 1 of 20 rows are not numbers"),
        ([3, 5, np.nan], 4, r"'label': 1 of 20 rows are NaN or missing"),
        ([3, 5, "five"], 4, r"'label': 1 of 20 rows are not numbers"),
    ],
)
def test_bad_table_labels_name_the_column(tmp_path, labels, threshold, message):
    frame = _table()
    frame["label"] = [*labels, *([0] * (20 - len(labels)))]
    with pytest.raises(ValueError, match=message):
        load_ctr_dataset(_write(tmp_path, frame, label_threshold=threshold))


@pytest.mark.parametrize(("rows", "message"), [(0, "has no rows"), (1, "the train split is empty")])
def test_empty_tables_and_train_splits_raise(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_ctr_dataset(_write(tmp_path, _table().head(rows)))


def test_prepare_refuses_empty_validation_or_test(tmp_path, tiny_encoder_dir):
    path = _write(tmp_path, _table(5))  # 80/10/10 of 5 rows: 4 / 0 / 1
    with pytest.raises(ValueError, match=r"\['validation'\] split\(s\) are empty"):
        prepare_dataset(path, tmp_path / "out", text_model=tiny_encoder_dir, max_length=32)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_table_values_keep_their_text_and_match_the_processor(tmp_path, tiny_tokenizer, fmt):
    """Leading zeros survive (CSV read as text), integral floats with NaN give "21" and None, unicode / long /
    duplicate rows pass unchanged, and the processor encodes the raw rows to the same ids as the recipe's output."""
    frame = _table()
    frame.loc[3, "user"] = "Zoë 東京 😀"
    frame.loc[5, "user"] = "y" * 3000
    frame.loc[7] = frame.loc[6]  # duplicate row
    splits = load_ctr_dataset(_write(tmp_path, frame, fmt=fmt))
    rows = pd.concat([splits[s].to_pandas() for s in ("train", "validation", "test")], ignore_index=True)
    assert len(rows) == 20 and set(rows["zip"]) == {"02139", "10001"}
    assert rows["age"].isna().sum() == 5 and set(rows["age"].dropna()) == {"20", "21", "22"}
    assert {"Zoë 東京 😀", "y" * 3000} <= set(rows["user"])
    assert rows["ts"].is_monotonic_increasing
    schema = TabularSchema([FieldSpec(n) for n in ("user", "zip", "age")]).fit(rows)
    raw = next(iter_chunks(str(tmp_path / f"rows.{fmt}"), 1000))  # the same file, read the way `flip predict` reads it
    raw["ts"] = raw["ts"].astype(int)
    assert (schema.encode(raw.sort_values("ts", kind="stable")) == schema.encode(rows)).all()


def test_nested_table_values_raise_naming_the_column(tmp_path):
    frame = _table()
    frame["user"] = [["a", "b"]] * 20
    with pytest.raises(TypeError, match=r"Column 'user': 20 of 20 values are lists"):
        load_ctr_dataset(_write(tmp_path, frame, fmt="jsonl"))


# ---------------------------------------------------------------------------------------------------------------
# 5. untrusted and damaged files
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved_id_model(tmp_path, tiny_text_config, tiny_tokenizer) -> str:
    from tests.test_pipeline import save_tiny_ctr_model

    return save_tiny_ctr_model(tmp_path / "model", "id", tiny_text_config, tiny_tokenizer)


def _damage(data: bytes, how: str) -> bytes:
    header = struct.unpack("<Q", data[:8])[0]
    return {
        "truncated": data[: len(data) // 2],
        "header-only": data[: 8 + header],
        "tiny": data[:5],
        "empty": b"",
        "header-byte-flipped": data[:8] + bytes([data[8] ^ 0xFF]) + data[9:],
        "header-length-wrong": struct.pack("<Q", header + 1000) + data[8:],
    }[how]


LOADERS = ["FlipForCTR", "AutoModelForSequenceClassification", "predict.load_ctr_model"]


def _load(loader: str, path: str):
    from transformers import AutoModelForSequenceClassification

    from modeling_flip import FlipForCTR
    from training.predict import load_ctr_model

    if loader == "FlipForCTR":
        return FlipForCTR.from_pretrained(path)
    if loader == "AutoModelForSequenceClassification":
        return AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
    return load_ctr_model(path)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    "how", ["truncated", "header-only", "tiny", "empty", "header-byte-flipped", "header-length-wrong"]
)
def test_damaged_safetensors_error_names_the_file(saved_id_model, loader, how):
    weights = f"{saved_id_model}/model.safetensors"
    with open(weights, "rb") as handle:
        data = handle.read()
    with open(weights, "wb") as handle:
        handle.write(_damage(data, how))
    with pytest.raises(OSError, match=rf"Cannot read {weights}: .*truncated or corrupted"):
        _load(loader, saved_id_model)


def test_pickled_weights_are_never_loaded(saved_id_model, monkeypatch):
    """Only safetensors: a `pytorch_model.bin` next to (or instead of) the weights is never unpickled."""
    import os

    import torch

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a model folder")

    os.remove(f"{saved_id_model}/model.safetensors")
    torch.save({"flip.tabular_model.embeddings.weight": torch.zeros(1)}, f"{saved_id_model}/pytorch_model.bin")
    monkeypatch.setattr(torch, "load", no_unpickling)
    for loader in LOADERS[:2]:
        with pytest.raises(OSError, match="no file named model.safetensors"):
            _load(loader, saved_id_model)


def test_text_tower_loads_only_safetensors(tmp_path, tiny_text_config):
    import torch
    from transformers import BertModel

    from modeling_flip import FlipForCTR

    model = BertModel(tiny_text_config, add_pooling_layer=False)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # an old-style pickled checkpoint
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    kwargs = {"field_names": ["a"], "field_vocab_sizes": [4], "ctr_mode": "text"}
    with pytest.raises(OSError, match="no file named model.safetensors"):
        FlipForCTR.from_text_pretrained(str(tmp_path), **kwargs)
    torch.manual_seed(0)  # an explicit opt-in still works (the caller trusts that file)
    model = FlipForCTR.from_text_pretrained(str(tmp_path), text_model_kwargs={"use_safetensors": False}, **kwargs)
    assert model.flip.text_model is not None


# ---------------------------------------------------------------------------------------------------------------
# 6. a model used with another schema
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def other_schema_processor(tiny_tokenizer, tmp_path) -> str:
    """A processor folder whose schema has the model's field names but other vocabulary sizes."""
    rows = ml_rows(64)
    rows["genre"] = [f"g{i}" for i in range(64)]  # 64 genres instead of 6
    path = tmp_path / "other-processor"
    FlipProcessor(tiny_tokenizer, ml_schema(rows), PromptTemplate(), max_length=64).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("mode", ["id", "joint"])
def test_predict_refuses_a_processor_of_another_schema(
    mode, other_schema_processor, tmp_path, tiny_text_config, tiny_tokenizer
):
    from tests.test_pipeline import save_tiny_ctr_model

    saved_id_model = save_tiny_ctr_model(tmp_path / "model", mode, tiny_text_config, tiny_tokenizer)
    from training import predict

    frame = pd.DataFrame(ml_rows(4)).drop(columns="label")
    frame.to_csv(tmp_path / "rows.csv", index=False)
    argv = [saved_id_model, str(tmp_path / "rows.csv"), "--processor", other_schema_processor]
    with pytest.raises(ValueError, match=r"field_vocab_sizes: model has .*index, model, data\) \[\(7, 8, 66\)\]"):
        predict.main([*argv, "--output_file", str(tmp_path / "out.csv")])
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("how", ["processor", "schema"])
def test_pipeline_refuses_a_processor_or_schema_of_another_dataset(saved_id_model, other_schema_processor, how):
    from transformers import AutoModelForSequenceClassification

    from training.pipeline import CtrPredictionPipeline

    model = AutoModelForSequenceClassification.from_pretrained(saved_id_model, trust_remote_code=True)
    other = FlipProcessor.from_pretrained(other_schema_processor)
    kwargs = {"processor": other} if how == "processor" else {"schema": other.schema}
    with pytest.raises(ValueError, match=r"field_vocab_sizes: model has .*\(7, 8, 66\)"):
        CtrPredictionPipeline(model=model, **kwargs)


def test_evaluate_refuses_a_prepared_folder_of_another_schema(saved_id_model, tmp_path, tiny_encoder_dir):
    from training import evaluate

    path = _write(tmp_path, _table(40))
    prepare_dataset(path, tmp_path / "prepared", text_model=tiny_encoder_dir, max_length=32)
    with pytest.raises(ValueError, match=r"field_names: model has \['user_id', .*data schema has \['user', 'zip'"):
        evaluate.main([saved_id_model, "--dataset", str(tmp_path / "prepared"), "--output_file", "-"])
    with pytest.raises(ValueError, match=r"missing the schema columns \['user_id', 'gender'"):  # raw rows
        evaluate.main([saved_id_model, "--dataset", path, "--output_file", str(tmp_path / "e.json")])


def test_finetune_init_from_a_checkpoint_of_another_schema(saved_id_model, tmp_path, tiny_encoder_dir):
    from tests.test_training import CONFIGS
    from training import finetune

    path = _write(tmp_path, _table(40))
    argv = [str(CONFIGS / "finetune_tiny.yaml"), "--dataset", path, "--text_model", tiny_encoder_dir]
    argv += ["--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "ft"), "--init_from"]
    with pytest.raises(ValueError, match=r"disagree: field_names: model has \['user_id'.*\['user', 'zip', 'age'\]"):
        finetune.main([*argv, saved_id_model, "--ctr_mode", "id"])


def test_schema_file_round_trip_keeps_check_compatible_exact(tmp_path):
    """A saved schema with num_buckets reloads with the same sizes (so checkpoints keep matching their data)."""
    schema = ml_schema()
    schema.fields[0].num_buckets = 1000
    schema.save(tmp_path / "s.json")
    loaded = type(schema).load(tmp_path / "s.json")
    loaded.check_compatible({"field_names": schema.field_names, "field_vocab_sizes": schema.field_vocab_sizes})
    assert json.loads((tmp_path / "s.json").read_text())["fields"][0]["num_buckets"] == 1000
    assert loaded.field_vocab_sizes[0] == 1002


# ---------------------------------------------------------------------------------------------------------------
# 3. crash safety: training killed mid-way and resumed == uninterrupted; caches / outputs never half-written
# ---------------------------------------------------------------------------------------------------------------

from tests.test_training import CONFIGS  # noqa: E402

# 8 steps, a checkpoint every 3 steps, no evaluation in between, with each stage's default schedule (finetuning:
# FLIP_ID, linear; pretraining: cosine, ICL + MLM + MTM with NCE noise sampling, text / projection / MLM-head dropout)
BUDGET = ["--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "3", "--max_steps", "8"]
BUDGET += ["--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
STAGES = {"finetune": ["--ctr_mode", "id"], "pretrain": []}
KILL_SCRIPT = """
import importlib, os, signal, sys
from transformers import Trainer

save = Trainer._save_optimizer_and_scheduler
def save_then_die(self, output_dir):  # SIGKILL inside the save of checkpoint-6: weights written, optimizer not
    if self.state.global_step == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, output_dir)
Trainer._save_optimizer_and_scheduler = save_then_die
importlib.import_module("training." + sys.argv[1]).main(sys.argv[2:])
"""


def _argv(stage: str, output_dir, data_args) -> list[str]:
    config = str(CONFIGS / f"{stage}_tiny.yaml")
    return [config, *data_args, *BUDGET, *STAGES[stage], "--output_dir", str(output_dir)]


def _train(stage: str, output_dir, data_args, *extra) -> dict:
    """`training.finetune.main` / `training.pretrain.main` with the budget above."""
    import importlib

    return importlib.import_module(f"training.{stage}").main([*_argv(stage, output_dir, data_args), *extra])


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _metrics(results: dict) -> dict:
    """Test metrics of a finetuning (AUC, LogLoss, loss), validation losses of a pretraining (ICL, MLM, MTM)."""
    scored = results["test"] if "test" in results else results["validation"]
    return {key: value for key, value in scored.items() if not key.endswith(("runtime", "_per_second"))}


def _assert_same_run(first: dict, second: dict, first_dir, second_dir) -> None:
    """Bit-identical metrics and final weights."""
    import torch

    assert _metrics(first) == _metrics(second) and any(key.endswith("_loss") for key in _metrics(first))
    a, b = _weights(first_dir), _weights(second_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.fixture(scope="module")
def data_args(request) -> list[str]:
    """`--dataset TABLE --text_model TINY --data_dir PREPARED` of tests/test_training.py (prepared once here)."""
    return request.getfixturevalue("common_args")


@pytest.fixture(scope="module", params=list(STAGES))
def straight_run(request, data_args, tmp_path_factory) -> tuple[str, object, dict]:
    """(stage, output folder, results) of an uninterrupted 8-step run of each stage."""
    output_dir = tmp_path_factory.mktemp(f"straight-{request.param}")
    return request.param, output_dir, _train(request.param, output_dir, data_args)


def test_crash_at_a_random_step_then_resume_equals_an_uninterrupted_run(straight_run, data_args, tmp_path):
    """A callback raising at step 5 (after checkpoint-3) kills the run; --resume_from_checkpoint true replays
    steps 4..8 from checkpoint-3 (model, optimizer, schedule, RNG, data order, masks) to the same weights."""
    import importlib

    from transformers import TrainerCallback

    stage, straight_dir, straight = straight_run
    script = importlib.import_module(f"training.{stage}")

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise RuntimeError("simulated crash at step 5")

    callbacks = script.training_callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(script, "training_callbacks", lambda args: [*callbacks(args), CrashAt()])
        with pytest.raises(RuntimeError, match="simulated crash"):
            _train(stage, tmp_path, data_args)
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == ["checkpoint-3"]
    assert not (tmp_path / "model.safetensors").exists()  # no final model from a crashed run
    resumed = _train(stage, tmp_path, data_args, "--resume_from_checkpoint", "true")
    _assert_same_run(straight, resumed, straight_dir, tmp_path)


def test_sigkill_during_a_checkpoint_save_then_resume_equals_an_uninterrupted_run(straight_run, data_args, tmp_path):
    """A real SIGKILL of the training process in the middle of writing checkpoint-6 leaves only the temporary
    folder; resuming ignores it, continues from checkpoint-3 and ends with the uninterrupted run's weights."""
    import os
    import signal
    import subprocess
    import sys

    stage, straight_dir, straight = straight_run
    env = dict(os.environ, PYTHONPATH=str(CONFIGS.parents[1]), OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", KILL_SCRIPT, stage, *_argv(stage, tmp_path, data_args)]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name)
    assert names == ["checkpoint-3", "tmp-checkpoint-6"]
    assert (tmp_path / "tmp-checkpoint-6" / "checkpoint-6" / "model.safetensors").exists()  # half-written save
    resumed = _train(stage, tmp_path, data_args, "--resume_from_checkpoint", "true")
    _assert_same_run(straight, resumed, straight_dir, tmp_path)
    assert not (tmp_path / "tmp-checkpoint-6").exists() or (tmp_path / "checkpoint-6").exists()


@pytest.mark.parametrize("failure", [OSError("connection reset"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_download_failing_mid_write_leaves_nothing_and_heals(tmp_path, failure):
    from processing.datasets import DownloadError, cached_fetch

    def half_then_fail(target):
        target.write_bytes(b"x" * 100)
        raise failure

    with pytest.raises(type(failure)):
        cached_fetch("data.bin", half_then_fail, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no final file, no .part, no checksum sidecar
    # a SIGKILLed fetch leaves its .part file (no `finally` runs) and maybe the sidecar: both are ignored
    (tmp_path / ".data.bin.abc123.part").write_bytes(b"x" * 100)
    (tmp_path / "data.bin.sha256").write_text("0" * 64)
    path = cached_fetch("data.bin", lambda target: target.write_bytes(b"payload"), cache_dir=tmp_path)
    assert path.read_bytes() == b"payload"
    with pytest.raises(DownloadError, match="verification"):  # a wrong payload is never installed either
        cached_fetch("other.bin", lambda target: target.write_bytes(b"bad"), sha256="0" * 64, cache_dir=tmp_path)
    assert not (tmp_path / "other.bin").exists()


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_prepare_failing_mid_write_leaves_no_partial_output(tmp_path, tiny_encoder_dir, monkeypatch, existing):
    """`flip prepare` writes into a temporary sibling folder: a failure after the data was written leaves neither
    a half-written output nor temporary folders, and an existing output stays as it was."""
    path = _write(tmp_path, _table(40))
    out = tmp_path / "prepared"
    if existing:
        prepare_dataset(path, out, text_model=tiny_encoder_dir, max_length=32)
    before = sorted(p.name for p in out.rglob("*")) if existing else None

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(FlipProcessor, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(path, out, text_model=tiny_encoder_dir, max_length=32, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (sorted(p.name for p in out.rglob("*")) if existing else out.exists()) == (before if existing else False)


# ---------------------------------------------------------------------------------------------------------------
# 4. determinism: same seed, same CPU -> bit-identical metrics and weights
# ---------------------------------------------------------------------------------------------------------------


def test_training_is_bit_identical_across_runs(straight_run, data_args, tmp_path):
    stage, straight_dir, straight = straight_run
    _assert_same_run(straight, _train(stage, tmp_path, data_args), straight_dir, tmp_path)


def _pretraining_steps(tiny_tokenizer, tiny_text_config, seed: int, steps: int = 3) -> list[float]:
    """`steps` AdamW steps of a tiny FlipForPretraining on processor + collator batches (random masking seeded)."""
    import torch
    from transformers import set_seed

    from modeling_flip import FlipConfig, FlipForPretraining
    from processing.collators import DataCollatorForFlipPretraining
    from tests.test_modeling_flip import FlipModelTester

    set_seed(seed)
    schema = ml_schema()
    kwargs = FlipModelTester(tiny_text_config).config_kwargs(
        field_names=schema.field_names, field_vocab_sizes=schema.field_vocab_sizes
    )
    model = FlipForPretraining(FlipConfig(text_config=tiny_text_config.to_dict(), **kwargs))
    model.set_feature_frequencies(schema.feature_counts())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    processor = FlipProcessor(tiny_tokenizer, schema, PromptTemplate(), max_length=64)
    collator = DataCollatorForFlipPretraining(tiny_tokenizer, mlm_field_ratio=0.3, mtm_field_ratio=0.3, seed=seed)
    encoded = processor(ml_rows(24))
    rows = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    losses = []
    for step in range(steps):
        batch = collator(rows[step * 8 : step * 8 + 8])
        batch.pop("labels", None)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses + [p.detach().sum().item() for p in model.parameters()]


def test_pretraining_steps_are_bit_identical_across_runs(tiny_tokenizer, tiny_text_config):
    """Cheap version of the next test: the same seed gives the same masks, losses and parameters, bit for bit."""
    first = _pretraining_steps(tiny_tokenizer, tiny_text_config, seed=0)
    assert first == _pretraining_steps(tiny_tokenizer, tiny_text_config, seed=0)
    assert first != _pretraining_steps(tiny_tokenizer, tiny_text_config, seed=1)  # the seed matters
