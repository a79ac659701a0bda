"""Prepared-data cache (issue 15 items 1 and 6): a cached encoding is reused only for the same inputs, and the
folder `flip prepare` writes by default is the one the training scripts reuse."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from processing.preparation_key import encoding_options, prepared_folder
from processing.prepare import main as prepare_main
from processing.prompts import PromptTemplate
from training import finetune

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture
def own_table(table, tmp_path) -> Path:
    """A private copy of the shared table + schema file (this test edits them)."""
    for name in ("rows.csv", "table.yaml"):
        shutil.copy(Path(table).parent / name, tmp_path / name)
    return tmp_path / "table.yaml"


def finetune_id(dataset, tiny_encoder_dir, data_dir, output_dir) -> list[str]:
    """Field names of a one-epoch ID model finetuned on `dataset`."""
    args = ["--dataset", str(dataset), "--text_model", tiny_encoder_dir, "--data_dir", str(data_dir)]
    args += ["--ctr_mode", "id", "--num_train_epochs", "1", "--output_dir", str(output_dir)]
    finetune.main([str(CONFIGS / "finetune_tiny.yaml"), *args])
    return json.loads((Path(output_dir) / "config.json").read_text())["field_names"]


def test_a_changed_schema_file_is_prepared_again(own_table, tiny_encoder_dir, tmp_path):
    data_dir = tmp_path / "prepared"
    assert finetune_id(own_table, tiny_encoder_dir, data_dir, tmp_path / "a") == [
        "user_id",
        "gender",
        "movie_id",
        "genre",
    ]
    schema = yaml.safe_load(own_table.read_text())
    own_table.write_text(yaml.safe_dump({**schema, "fields": ["user_id", "gender", "movie_id"]}))
    assert finetune_id(own_table, tiny_encoder_dir, data_dir, tmp_path / "b") == ["user_id", "gender", "movie_id"]
    assert len(os.listdir(data_dir)) == 2


def test_a_prepared_folder_whose_table_changed_is_refused(own_table, tiny_encoder_dir, tmp_path):
    folder = tmp_path / "prepared"
    prepare_main([str(own_table), "--output_dir", str(folder), "--text_model", tiny_encoder_dir, "--max_length", "64"])
    with open(own_table.parent / "rows.csv", "a") as rows:
        rows.write("3,male,4,war,1,240\n")
    with pytest.raises(ValueError, match=r"prepared from .*rows\.csv.*changed since"):
        finetune_id(folder, tiny_encoder_dir, tmp_path / "unused", tmp_path / "out")


def test_every_encoding_input_is_part_of_the_cache_key(own_table, tiny_encoder_dir, tmp_path):
    encoder = shutil.copytree(tiny_encoder_dir, tmp_path / "encoder")

    def folder(**changes) -> str:
        options = {"text_model": str(encoder), "max_length": 64, **changes}
        return prepared_folder(str(own_table), "data", encoding_options(**options))

    base = folder()
    variants = [
        folder(max_length=32),
        folder(num_buckets={"user_id": 8}),
        folder(split="random", seed=0),  # any recipe argument, e.g. a future split option
        folder(text_model=tiny_encoder_dir),
        folder(prompt_template=PromptTemplate(hidden_fields=["user_id"])),
    ]
    assert len({base, *variants}) == 6 and folder() == base
    os.utime(own_table.parent / "rows.csv", ns=(1, 1))
    table_changed = folder()
    (encoder / "tokenizer_config.json").write_text((encoder / "tokenizer_config.json").read_text() + " ")
    assert len({base, table_changed, folder(), *variants}) == 8


def test_flip_prepare_writes_the_folder_that_training_reuses(own_table, tiny_encoder_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare_main([str(own_table), "--text_model", tiny_encoder_dir, "--max_length", "64"])
    (prepared,) = os.listdir("data")
    stamp = os.stat(Path("data", prepared, "dataset_dict.json")).st_mtime_ns
    finetune_id(own_table, tiny_encoder_dir, "data", tmp_path / "out")  # finetune_tiny.yaml: max_length 64
    assert os.listdir("data") == [prepared]
    assert os.stat(Path("data", prepared, "dataset_dict.json")).st_mtime_ns == stamp
