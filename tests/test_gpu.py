"""CUDA checks (`make test-gpu`): a bf16-autocast pretraining step and CTR inference on the GPU match the fp32 CPU
results closely and leave fp32 master weights. Skipped where no CUDA device exists."""

import pytest
import torch

from modeling_flip import FlipForCTR, FlipForPretraining
from tests.test_modeling_flip import FlipModelTester

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def to_cuda(inputs: dict) -> dict:
    return {name: value.cuda() for name, value in inputs.items()}


def test_bf16_pretraining_step_matches_fp32_cpu(tiny_text_config):
    tester = FlipModelTester(tiny_text_config)
    torch.manual_seed(0)
    model = FlipForPretraining(tester.get_config(mtm_loss="softmax")).eval()  # softmax: no noise sampling
    inputs = tester.pretraining_inputs()
    cpu_loss = model(**inputs).loss
    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu_loss = model(**to_cuda(inputs)).loss
    gpu_loss.backward()
    assert torch.isclose(gpu_loss.float().cpu(), cpu_loss, rtol=5e-2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("ctr_mode", ["id", "joint"])
def test_ctr_logits_on_gpu_match_cpu(tiny_text_config, ctr_mode):
    tester = FlipModelTester(tiny_text_config)
    model = FlipForCTR(tester.get_config(ctr_mode=ctr_mode)).eval()
    inputs = tester.pretraining_inputs()
    inputs = {name: inputs[name] for name in ("field_ids", "input_ids", "attention_mask")}
    with torch.no_grad():
        cpu_logits = model(**inputs).logits
        gpu_logits = model.cuda()(**to_cuda(inputs)).logits.cpu()
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-4, atol=1e-4)
