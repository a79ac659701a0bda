"""training.hub: Hub-ready folder (weights, processor, code files, rendered card) and push through a fake HfApi."""

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from modeling_flip import FlipConfig, FlipForCTR
from processing import FlipProcessor, PromptTemplate
from tests._data_fixtures import ml_schema
from training import hub
from training.card import CardInfo, render_model_card
from training.hub import push_to_hub, save_for_hub


class FakeApi:
    """Records the calls a push makes instead of reaching the Hub. `upload_folder` lists the files it would upload
    the way `HfApi.upload_folder` selects them: huggingface_hub's own `filter_repo_objects` over the folder's
    relative paths, with the caller's `ignore_patterns` plus huggingface_hub's `DEFAULT_IGNORE_PATTERNS`."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, "repo_type": repo_type, "private": private}))
        assert exist_ok and not kwargs
        return mock.Mock(repo_id=repo_id)

    def upload_folder(self, *, folder_path, repo_id, repo_type=None, commit_message=None, ignore_patterns=None, **kw):
        root = Path(folder_path)
        paths = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
        patterns = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]
        uploaded = set(
            filter_repo_objects(paths, allow_patterns=kw.pop("allow_patterns", None), ignore_patterns=patterns)
        )
        assert not kw, kw
        details = {"repo_id": repo_id, "repo_type": repo_type, "commit_message": commit_message, "files": uploaded}
        self.calls.append(("upload_folder", details))
        return mock.Mock(commit_url=f"https://hub/{repo_id}/commit/1")


class OfflineApi:
    """Fails on any call: a dry run must not reach the Hub."""

    def __getattr__(self, name):
        raise AssertionError(f"a dry run called HfApi.{name}")


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


@pytest.fixture
def trained_folder(saved_folder, tmp_path) -> Path:
    """`saved_folder` plus what a training run leaves beside the model: checkpoints, TensorBoard logs, optimizer and
    trainer states, a temporary file and a LoRA adapter whose base model is a local path."""
    folder = Path(shutil.copytree(saved_folder, tmp_path / "run"))
    for name in ("checkpoint-8/model.safetensors", "checkpoint-8/optimizer.pt", "tmp-checkpoint-9/checkpoint-9/x"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"state")
    (folder / "runs" / "Nov30").mkdir(parents=True)
    (folder / "runs" / "Nov30" / "events.out.tfevents.1").write_bytes(b"events")
    (folder / "training_args.bin").write_bytes(b"args")
    (folder / ".tmp-results.json").write_text("{}")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path)}))
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"lora")
    (folder / "adapter" / "README.md").write_text("peft's template card")
    return folder


MODEL_FILES = {"README.md", "config.json", "model.safetensors", "modeling_flip.py", "pipeline_flip.py"}
TRAINING_LEFTOVERS = {"checkpoint-8/model.safetensors", "runs/Nov30/events.out.tfevents.1", "training_args.bin"}


def test_push_uploads_the_model_and_leaves_out_the_run(trained_folder):
    """Issue 17 item 5: repository id and type, private flag, commit message, and the excluded files."""
    api = FakeApi()
    push_to_hub(str(trained_folder), "me/flip-tiny", api=api, private=True, commit_message="FLIP tiny, run 3")
    (create, repo), (upload, pushed) = api.calls
    assert (create, upload) == ("create_repo", "upload_folder")
    assert repo == {"repo_id": "me/flip-tiny", "repo_type": "model", "private": True}
    assert (pushed["repo_id"], pushed["repo_type"], pushed["commit_message"]) == (
        "me/flip-tiny",
        "model",
        "FLIP tiny, run 3",
    )
    assert MODEL_FILES <= pushed["files"]
    leftovers = {
        name for name in pushed["files"] if name.startswith(("checkpoint-", "tmp-", "runs/", "adapter/", "."))
    }
    assert not leftovers and not {"training_args.bin", "checkpoint-8/optimizer.pt"} & pushed["files"]
    assert pushed["files"] == set(hub.push_plan(str(trained_folder), "me/flip-tiny").files)  # the dry run's list


def test_push_keeps_runs_when_asked_and_a_hub_based_adapter(trained_folder):
    config = {"base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"}
    (trained_folder / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    api = FakeApi()
    push_to_hub(str(trained_folder), "me/flip-tiny", api=api, include_runs=True)
    files = api.calls[1][1]["files"]
    assert {"runs/Nov30/events.out.tfevents.1", "adapter/adapter_model.safetensors"} <= files
    assert "adapter/README.md" not in files and api.calls[0][1]["private"] is False


def test_dry_run_lists_files_and_sizes_offline(trained_folder, capsys, monkeypatch):
    monkeypatch.setattr(hub, "HfApi", lambda token=None: OfflineApi())
    plan = hub.main([str(trained_folder), "me/flip-tiny", "--private", "--dry_run"])
    out = capsys.readouterr().out
    assert "repository: me/flip-tiny (model, private)" in out and "dry run: nothing was uploaded" in out
    assert "flip-tiny; tags ctr-prediction" in out and "AUC 0.7123" in out  # the rendered card's metadata
    size = os.path.getsize(trained_folder / "model.safetensors")
    assert f"{hub.human_size(size)}  model.safetensors" in out
    assert "checkpoint-8/ (2 files)" in out and "runs/ (1 file)" in out
    assert not set(plan.files) & TRAINING_LEFTOVERS


@pytest.mark.parametrize(("repo_id", "message"), [("me/bad id", "invalid Hub repository id"), ("a/b/c", "invalid")])
def test_push_validates_the_repository_id_before_any_call(trained_folder, repo_id, message):
    with pytest.raises(ValueError, match=message):
        push_to_hub(str(trained_folder), repo_id, api=OfflineApi())


def test_push_refuses_a_folder_without_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        push_to_hub(str(tmp_path), "me/x", api=OfflineApi())


def test_flip_push_command(saved_folder, monkeypatch):
    api = FakeApi()
    monkeypatch.setattr(hub, "HfApi", lambda token=None: api)
    hub.main([saved_folder, "me/flip-tiny", "--private", "--commit_message", "m"])
    assert [call[0] for call in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1]["private"] and api.calls[1][1]["commit_message"] == "m"


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
    assert {"processing/datasets/example/clicks.csv", "processing/datasets/example/clicks.yaml"} <= names
