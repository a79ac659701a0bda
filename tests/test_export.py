"""`flip export-id`: the ID tower + schema of a FLIP_ID / FLIP model, without text weights or tokenizer, reproduces
the ID scores exactly and loads through the Auto classes (remote code) and the pipeline."""

import importlib.util
import json
import os
import stat
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification

from modeling_flip import FlipForCTR
from processing import FlipProcessor
from processing.atomic_io import current_umask
from tests import test_pipeline
from tests.test_pipeline import rows_frame, save_tiny_ctr_model
from training import cli
from training.export import ENCODER_NAME, INFO_NAME, export_flip_id, load_exported_id, score_exported
from training.pipeline import load_ctr_pipeline

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture


def shipped_schema(folder):
    """The folder's own `tabular_schema.py` (no package import) reading its `flip_schema.json`."""
    spec = importlib.util.spec_from_file_location("exported_tabular_schema", folder / ENCODER_NAME)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.TabularSchema.load(str(folder / "flip_schema.json"))


def id_logits(model_dir: str, frame) -> torch.Tensor:
    """The source model's ID-tower logits (`logits` in id mode, `id_logits` in joint mode)."""
    model = FlipForCTR.from_pretrained(model_dir).eval()
    batch = FlipProcessor.from_pretrained(model_dir)(frame, return_tensors="pt")
    with torch.no_grad():
        return model(field_ids=batch["field_ids"], input_ids=batch["input_ids"]).id_logits


@pytest.mark.parametrize("mode", ["id", "joint"])
def test_export_reproduces_id_scores_without_text(tiny_ctr_dirs, tmp_path, mode, capsys):
    out = tmp_path / "exported"
    info = cli.main(["export-id", tiny_ctr_dirs[mode], str(out)]) == 0 and json.loads((out / INFO_NAME).read_text())
    assert "exported the ID tower" in capsys.readouterr().out
    assert info["source_ctr_mode"] == mode and 0 < info["exported_bytes"]
    source_weights = os.path.getsize(os.path.join(tiny_ctr_dirs[mode], "model.safetensors"))
    assert os.path.getsize(out / "model.safetensors") <= source_weights  # (tiny models: code files dominate sizes)
    assert "custom_pipelines" in json.loads((out / "config.json").read_text())  # see test_remote_code
    assert not {"tokenizer_config.json", "vocab.txt", "processor_config.json"} & set(os.listdir(out))
    mask = current_umask()  # not the 0o700 / 0o600 of a temporary folder and of safetensors
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~mask
    assert {stat.S_IMODE(os.stat(path).st_mode) for path in out.iterdir()} == {0o666 & ~mask}
    assert not [name for name in load_file(out / "model.safetensors") if "text" in name]
    frame = rows_frame()
    expected = id_logits(tiny_ctr_dirs[mode], frame)
    model, schema = load_exported_id(str(out))
    assert model.config.ctr_mode == "id" and model.flip.text_model is None
    torch.testing.assert_close(score_exported(model, schema, frame), torch.sigmoid(expected), atol=0, rtol=0)
    field_ids = torch.as_tensor(schema.encode(frame))
    with torch.no_grad():
        remote = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
        torch.testing.assert_close(remote(field_ids=field_ids).logits, expected, atol=0, rtol=0)
        towers = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
        torch.testing.assert_close(towers.tabular_model(field_ids)[1], expected, atol=0, rtol=0)
    assert (shipped_schema(out).encode(frame.to_dict("list")) == field_ids.numpy()).all()
    probs = load_ctr_pipeline(str(out), device="cpu")(frame, batch_size=4)
    torch.testing.assert_close(torch.tensor(probs), torch.sigmoid(expected), atol=1e-6, rtol=0)


def test_export_refuses_a_text_only_model(tiny_text_config, tiny_tokenizer, tmp_path):
    source = save_tiny_ctr_model(tmp_path / "text", "text", tiny_text_config, tiny_tokenizer)
    with pytest.raises(ValueError, match="--ctr_mode id"):
        export_flip_id(source, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_shows_a_usage_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert cli.EXAMPLE_LINE.search(capsys.readouterr().out)
