"""training.hub: Hub-ready folder (weights, processor, code files, rendered card) and push through a fake HfApi."""

import os
from unittest import mock

import pytest
from huggingface_hub import ModelCard

from modeling_flip import FlipConfig, FlipForCTR
from processing import FlipProcessor, PromptTemplate
from tests._data_fixtures import ml_schema
from training import hub
from training.hub import CardInfo, push_to_hub, render_model_card, save_for_hub


class FakeApi:
    """Records the calls `push_to_hub` makes instead of reaching the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return mock.Mock(repo_id=repo_id)

    def upload_folder(self, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path)), kwargs))
        return mock.Mock(commit_url=f"https://hub/{repo_id}/commit/1")


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, tiny_tokenizer, tiny_text_config):
    schema = ml_schema()
    config = FlipConfig(
        text_config=tiny_text_config,
        field_names=schema.field_names,
        field_vocab_sizes=schema.field_vocab_sizes,
        ctr_mode="joint",
        mlp_hidden_sizes=[16],
    )
    processor = FlipProcessor(tiny_tokenizer, schema, PromptTemplate(), max_length=64)
    info = CardInfo(
        model_name="flip-tiny",
        dataset="movielens-100k",
        fields=schema.field_names,
        metrics={"auc": 0.71234, "logloss": 0.5891},
        training_command="flip finetune cfg.yaml",
        repo_id="me/flip-tiny",
    )
    folder = str(tmp_path_factory.mktemp("hub") / "model")
    return save_for_hub(FlipForCTR(config), processor, folder, info)


def test_saved_folder_is_self_contained(saved_folder):
    files = set(os.listdir(saved_folder))
    expected = {"README.md", "config.json", "model.safetensors", "configuration_flip.py", "modeling_flip.py"}
    assert expected <= files
    assert any(name.startswith("processor_config") for name in files)


def test_card_has_model_index_and_metadata(saved_folder):
    card = ModelCard.load(os.path.join(saved_folder, "README.md"))
    assert card.data.library_name == "transformers"
    assert {"ctr-prediction", "flip", "custom_code"} <= set(card.data.tags)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["roc_auc"].metric_value == pytest.approx(0.7123)
    assert results["roc_auc"].dataset_split == "test"
    assert results["log_loss"].metric_value == pytest.approx(0.5891)
    assert "flip finetune cfg.yaml" in card.text
    assert "{{" not in card.text


def test_card_without_metrics_or_hub_base_model():
    card = render_model_card(CardInfo(text_model="/local/encoder"))
    assert card.data.eval_results is None
    assert card.data.base_model is None


def test_push_uses_the_injected_api(saved_folder):
    api = FakeApi()
    push_to_hub(saved_folder, "me/flip-tiny", api=api, private=True)
    (create, repo, create_kwargs), (upload, upload_repo, uploaded, upload_kwargs) = api.calls
    assert (create, repo, upload, upload_repo) == ("create_repo", "me/flip-tiny", "upload_folder", "me/flip-tiny")
    assert create_kwargs["exist_ok"] and create_kwargs["private"]
    assert {"README.md", "config.json", "model.safetensors", "modeling_flip.py"} <= set(uploaded)
    assert "checkpoint-*" in upload_kwargs["ignore_patterns"]


def test_push_refuses_a_folder_without_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        push_to_hub(str(tmp_path), "me/x", api=FakeApi())


def test_flip_push_command(saved_folder, monkeypatch):
    api = FakeApi()
    monkeypatch.setattr(hub, "HfApi", lambda token=None: api)
    hub.main([saved_folder, "me/flip-tiny", "--private"])
    assert [call[0] for call in api.calls] == ["create_repo", "upload_folder"]


def test_wheel_ships_the_model_card_template_and_remote_code(tmp_path):
    """A non-editable install has no repository root: the card template (a link to the top-level `model_card.md`)
    and every remote-code module must be inside the wheel."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path)], check=True, capture_output=True)
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as wheel:
        names = set(wheel.namelist())
        assert wheel.read("training/model_card.md") == (repo / "model_card.md").read_bytes()
    modules = {
        f"{package}/{path.name}"
        for package in ("modeling_flip", "processing")
        for path in (repo / package).glob("*.py")
    }
    assert modules <= names and "training/configs/finetune_demo.yaml" in names
