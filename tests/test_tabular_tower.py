"""The tabular tower against independent recomputations on tiny fixed inputs: which embedding row each field id
reads, the first-order term, and each backbone's formula (DCN-Mix cross layers, the DeepFM FM term, AutoInt
interacting layers), computed one sample, one expert, one head and one field pair at a time."""

import math

import pytest
import torch

from modeling_flip import FlipForCTR
from tests.test_modeling_flip import BACKBONES, FlipModelTester

OFFSETS = [0, 5, 13, 25]  # cumulative sums of the tester's field vocabulary sizes [5, 8, 12, 6]


@pytest.fixture
def tester(tiny_text_config) -> FlipModelTester:
    return FlipModelTester(tiny_text_config, batch_size=3)


def test_field_f_local_id_k_reads_embedding_row_offset_f_plus_k(tester):
    model = FlipForCTR(tester.get_config(ctr_mode="id")).eval()
    tower = model.flip.tabular_model
    backbone_inputs = []
    tower.backbone.register_forward_pre_hook(lambda module, args: backbone_inputs.append(args[0]))
    field_ids = tester.field_ids(torch.Generator().manual_seed(0))  # (B, F) local ids
    logits = model(field_ids=field_ids).logits
    rows = field_ids + torch.tensor(OFFSETS)  # (B, F) rows of the shared tables
    assert torch.equal(backbone_inputs[0], tower.embeddings.weight[rows])
    first_order = tower.linear.weight[rows].sum(dim=(1, 2))  # (B,)
    torch.testing.assert_close(logits, tower.backbone(backbone_inputs[0])[1] + first_order)


def _mlp(mlp: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Linear -> ReLU for each layer (dropout is off in eval mode), one sample x (d,)."""
    for layer in mlp:
        if isinstance(layer, torch.nn.Linear):
            x = torch.relu(layer.weight @ x + layer.bias)
    return x


def _cross_net(cross, x0: torch.Tensor) -> torch.Tensor:
    """DCN-Mix (DCNv2 paper, eq. 5-6) on one sample x0 (d,): x_{l+1} = sum_k g_k(x_l) E_k(x_l) + x_l with the
    low-rank expert E_k(x) = x0 * (U_k tanh(C_k tanh(V_k^T x)) + b_l) and g = softmax(G_l x)."""
    x = x0
    for layer, gate in enumerate(cross.gates):
        g = torch.softmax(gate.weight @ x, dim=0)  # (K,)
        mixture = torch.zeros_like(x)
        for k in range(len(g)):
            u, v, c = cross.u[layer, k], cross.v[layer, k], cross.c[layer, k]  # (d, r), (d, r), (r, r)
            mixture = mixture + g[k] * x0 * (u @ torch.tanh(c @ torch.tanh(v.T @ x)) + cross.bias[layer])
        x = mixture + x
    return x


def _dcnv2(backbone, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = fields.flatten()
    hidden = torch.cat([_cross_net(backbone.cross, flat), _mlp(backbone.mlp, flat)])
    return hidden, backbone.logit.weight[0] @ hidden + backbone.logit.bias[0]


def _deepfm(backbone, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FM: sum over field pairs i < j of e_i * e_j (a vector), its sum the second-order logit."""
    pairs = [fields[i] * fields[j] for i in range(len(fields)) for j in range(i + 1, len(fields))]
    interaction = torch.stack(pairs).sum(0)  # (E,)
    deep = _mlp(backbone.mlp, fields.flatten())
    return torch.cat([interaction, deep]), interaction.sum() + backbone.logit.weight[0] @ deep + backbone.logit.bias[0]


def _interacting_layer(layer, fields: torch.Tensor) -> torch.Tensor:
    """AutoInt: per head, softmax(q k^T / sqrt(d_head)) v over the fields; heads concatenated, plus the residual
    projection, ReLU. fields (F, E)."""
    dim = fields.shape[1]
    head_dim = dim // layer.num_heads
    w_query, w_key, w_value = layer.qkv.weight.split(dim)  # (E, E) each
    heads = []
    for head in range(layer.num_heads):
        rows = slice(head * head_dim, (head + 1) * head_dim)
        query, key, value = fields @ w_query[rows].T, fields @ w_key[rows].T, fields @ w_value[rows].T  # (F, d_h)
        heads.append(torch.softmax(query @ key.T / math.sqrt(head_dim), dim=-1) @ value)
    return torch.relu(torch.cat(heads, dim=1) + fields @ layer.residual.weight.T)


def _autoint(backbone, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    attended = fields
    for layer in backbone.layers:
        attended = _interacting_layer(layer, attended)
    hidden = torch.cat([attended.flatten(), _mlp(backbone.mlp, fields.flatten())])
    return hidden, backbone.logit.weight[0] @ hidden + backbone.logit.bias[0]


REFERENCES = {"dcnv2": _dcnv2, "deepfm": _deepfm, "autoint": _autoint}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_matches_its_formula(tester, backbone):
    """Every weight random (none left at a zero or identity init), float64; 2 cross layers (layer 2 tells x_0 from
    x_l), 4 experts of rank 4, 2 heads, 2 AutoInt layers."""
    config = tester.get_config(ctr_mode="id", backbone=backbone, cross_layers=2, autoint_layers=2)
    module = FlipForCTR(config).flip.tabular_model.backbone.double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    fields = torch.randn(tester.batch_size, len(OFFSETS), config.embedding_dim, generator=generator).double()
    hidden, logits = module(fields)
    expected = [REFERENCES[backbone](module, sample) for sample in fields]
    torch.testing.assert_close(hidden, torch.stack([h for h, _ in expected]))
    torch.testing.assert_close(logits, torch.stack([z for _, z in expected]))
