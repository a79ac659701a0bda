"""A saved FLIP directory loads with `trust_remote_code=True` where this repository's packages cannot be imported."""

import json
import subprocess
import sys

import torch

from modeling_flip import FlipConfig, FlipForCTR

# Runs in a fresh interpreter: blocks our packages before transformers is imported, then loads through Auto classes.
LOADER = """
import importlib.abc, sys

class BlockRepositoryPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_flip", "processing", "training"}:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockRepositoryPackages())

import torch
from transformers import AutoModel, AutoModelForSequenceClassification

model_dir, inputs_file, outputs_file = sys.argv[1:]
inputs = torch.load(inputs_file)
outputs = {}
with torch.no_grad():
    ctr = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    outputs["ctr_module"] = type(ctr).__module__
    outputs["logits"] = ctr(**inputs).logits
    base = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    outputs["base_class"] = type(base).__name__
    outputs["tabular_embeds"] = base(**inputs).tabular_embeds
torch.save(outputs, outputs_file)
"""


def test_ctr_model_loads_as_remote_code(tmp_path, tiny_text_config):
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
    model = FlipForCTR(config).eval()
    model_dir = tmp_path / "flip-ctr"
    model.save_pretrained(model_dir)
    auto_map = json.loads((model_dir / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForPreTraining",
        "AutoModelForSequenceClassification",
    }

    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(5, tiny_text_config.vocab_size, (3, 7), generator=generator),
        "attention_mask": torch.ones(3, 7, dtype=torch.long),
        "field_ids": torch.tensor([[2, 3, 2], [5, 8, 3], [1, 2, 0]]),
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", LOADER, str(model_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    remote = torch.load(tmp_path / "out.pt")
    assert remote["ctr_module"].startswith("transformers_modules.")
    assert remote["base_class"] == "FlipModel"
    with torch.no_grad():
        assert torch.allclose(remote["logits"], model(**inputs).logits, atol=1e-6)
        assert torch.allclose(remote["tabular_embeds"], model.flip(**inputs).tabular_embeds, atol=1e-6)
