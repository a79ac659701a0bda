"""A saved FLIP directory loads with `trust_remote_code=True` where this repository's packages cannot be imported."""

import json
import subprocess
import sys

import pytest
import torch

from modeling_flip import FlipConfig, FlipForCTR, FlipForPretraining
from processing import FlipProcessor
from tests import test_pipeline

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture
AUTO_CLASSES = {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification"}
TOWER_INPUTS = ("input_ids", "attention_mask", "field_ids")

# Runs in a fresh interpreter: blocks our packages before transformers is imported, then loads the head through its
# Auto class and the towers through AutoModel, both from the code files saved next to the weights.
BLOCK_PACKAGES = """
import importlib.abc, sys

class BlockRepositoryPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_flip", "processing", "training"}:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockRepositoryPackages())
"""
LOADER = (
    BLOCK_PACKAGES
    + """
import torch
import transformers

model_dir, inputs_file, outputs_file, auto_class, output_key = sys.argv[1:]
inputs = torch.load(inputs_file)
outputs = {}
with torch.no_grad():
    head = getattr(transformers, auto_class).from_pretrained(model_dir, trust_remote_code=True).eval()
    outputs["head_module"] = type(head).__module__
    outputs["head"] = getattr(head(**inputs), output_key)
    towers = transformers.AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    outputs["towers_class"] = type(towers).__name__
    tower_inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "field_ids")}
    outputs["tabular_embeds"] = towers(**tower_inputs).tabular_embeds
torch.save(outputs, outputs_file)
"""
)


@pytest.mark.parametrize(
    ("model_class", "auto_class", "output_key", "extra_inputs"),
    [
        (FlipForCTR, "AutoModelForSequenceClassification", "logits", {}),
        (FlipForPretraining, "AutoModelForPreTraining", "logits_per_tabular", {"return_loss": False}),
    ],
)
def test_saved_model_loads_as_remote_code(
    tmp_path, tiny_text_config, model_class, auto_class, output_key, extra_inputs
):
    torch.manual_seed(0)
    config = FlipConfig(
        text_config=tiny_text_config,
        field_names=["user", "item", "genre"],
        field_vocab_sizes=[6, 9, 4],
        embedding_dim=8,
        low_rank=4,
        mlp_hidden_sizes=[16, 8],
        projection_dim=16,
    )
    model = model_class(config).eval()
    model_dir = tmp_path / "flip"
    model.save_pretrained(model_dir)
    assert set(json.loads((model_dir / "config.json").read_text())["auto_map"]) == AUTO_CLASSES

    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(5, tiny_text_config.vocab_size, (3, 7), generator=generator),
        "attention_mask": torch.ones(3, 7, dtype=torch.long),
        "field_ids": torch.tensor([[2, 3, 2], [5, 8, 3], [1, 2, 0]]),
        **extra_inputs,
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"}
    paths = [str(model_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    command = [sys.executable, "-c", LOADER, *paths, auto_class, output_key]
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    remote = torch.load(tmp_path / "out.pt")
    assert remote["head_module"].startswith("transformers_modules.")
    assert remote["towers_class"] == "FlipModel"
    with torch.no_grad():
        assert torch.allclose(remote["head"], getattr(model(**inputs), output_key), atol=1e-6)
        tower_inputs = {key: inputs[key] for key in TOWER_INPUTS}
        assert torch.allclose(remote["tabular_embeds"], model.flip(**tower_inputs).tabular_embeds, atol=1e-6)


# The task comes from config.json's `custom_pipelines`; the pipeline, model and processor from the folder's code files.
PIPELINE_LOADER = (
    BLOCK_PACKAGES
    + """
import json
from transformers import pipeline

model_dir, rows_file, out_file = sys.argv[1:]
rows = json.loads(open(rows_file).read())
ctr = pipeline(model=model_dir, trust_remote_code=True)
result = {"task": ctr.task, "module": type(ctr).__module__, "probs": ctr(rows, batch_size=4)}
open(out_file, "w").write(json.dumps(result))
"""
)


@pytest.mark.parametrize("exported", [False, True], ids=["finetuned", "export-id"])
def test_ctr_pipeline_runs_as_remote_code(tiny_ctr_dirs, tmp_path, exported):
    """Issue 15 item 16: `pipeline(model=DIR, trust_remote_code=True)` without the package gives the package's
    probabilities, for a folder written by the training scripts and for an `export-id` folder."""
    from training.card import CardInfo
    from training.export import export_flip_id
    from training.hub import save_for_hub
    from training.pipeline import load_ctr_pipeline

    model_dir = tmp_path / "flip"
    source = tiny_ctr_dirs["joint"]
    save_for_hub(FlipForCTR.from_pretrained(source), FlipProcessor.from_pretrained(source), str(model_dir), CardInfo())
    if exported:
        export_flip_id(str(model_dir), str(tmp_path / "exported"))
        model_dir = tmp_path / "exported"
    rows = test_pipeline.rows_frame().to_dict("records")
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", PIPELINE_LOADER, str(model_dir), str(tmp_path / "rows.json"), str(tmp_path / "o")]
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads((tmp_path / "o").read_text())
    assert remote["task"] == "ctr-prediction" and remote["module"].startswith("transformers_modules.")
    expected = load_ctr_pipeline(str(model_dir), device="cpu")(rows, batch_size=4)
    assert remote["probs"] == pytest.approx(expected, abs=1e-6)
