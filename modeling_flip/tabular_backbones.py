"""ID-based CTR backbones behind one interface.

Every backbone takes the field embeddings (B, F, E) of one row per sample and returns a representation
`hidden` (B, H) for the alignment heads and a CTR logit (B,) (without the first-order term, which
`FlipTabularModel` adds). `output_size` is H. All operations are vectorised over fields.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_flip import FlipConfig


class TabularBackbone(nn.Module):
    """Interface: `forward(field_embeddings (B, F, E)) -> (hidden (B, H), logit (B,))`; `output_size` = H."""

    output_size: int

    def __init__(self, config: FlipConfig):
        super().__init__()
        self.num_fields = config.num_fields
        self.embedding_dim = config.embedding_dim

    def forward(self, field_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class MLP(nn.Sequential):
    """Linear -> ReLU -> Dropout for each hidden size; `output_size` is the last hidden size."""

    def __init__(self, input_size: int, hidden_sizes: list[int], dropout: float):
        layers = []
        for size in hidden_sizes:
            layers += [nn.Linear(input_size, size), nn.ReLU(), nn.Dropout(dropout)]
            input_size = size
        super().__init__(*layers)
        self.output_size = input_size


class CrossNetMix(nn.Module):
    """DCN-Mix cross network (DCNv2 paper, DeepCTR-Torch `CrossNetMix`), vectorised over experts.

    Layer l: x_{l+1} = sum_k g_k(x_l) * x_0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b) + x_l,
    with g = softmax over the experts of a linear gate. Weights are initialised in `_init_weights`.
    """

    def __init__(self, input_size: int, num_layers: int, num_experts: int, low_rank: int):
        super().__init__()
        self.u = nn.Parameter(torch.empty(num_layers, num_experts, input_size, low_rank))
        self.v = nn.Parameter(torch.empty(num_layers, num_experts, input_size, low_rank))
        self.c = nn.Parameter(torch.empty(num_layers, num_experts, low_rank, low_rank))
        self.bias = nn.Parameter(torch.empty(num_layers, input_size))
        self.gates = nn.ModuleList(nn.Linear(input_size, num_experts, bias=False) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, d) -> (B, d)."""
        x = x0
        for layer, gate in enumerate(self.gates):
            low = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.v[layer]))  # (B, K, r)
            low = torch.tanh(torch.einsum("bkr,ksr->bks", low, self.c[layer]))  # (B, K, r)
            experts = x0.unsqueeze(1) * (torch.einsum("bkr,kdr->bkd", low, self.u[layer]) + self.bias[layer])
            weights = gate(x).softmax(dim=-1)  # (B, K)
            x = torch.einsum("bkd,bk->bd", experts, weights) + x
        return x


class DCNv2Backbone(TabularBackbone):
    """DCN-Mix: cross network and MLP in parallel; hidden = concat(cross_out (F*E), mlp_out)."""

    def __init__(self, config: FlipConfig):
        super().__init__(config)
        input_size = self.num_fields * self.embedding_dim
        self.cross = CrossNetMix(input_size, config.cross_layers, config.num_experts, config.low_rank)
        self.mlp = MLP(input_size, config.mlp_hidden_sizes, config.backbone_dropout)
        self.output_size = input_size + self.mlp.output_size
        self.logit = nn.Linear(self.output_size, 1)

    def forward(self, field_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = field_embeddings.flatten(1)  # (B, F*E)
        hidden = torch.cat([self.cross(flat), self.mlp(flat)], dim=-1)  # (B, H)
        return hidden, self.logit(hidden).squeeze(-1)


class DeepFMBackbone(TabularBackbone):
    """DeepFM: hidden = concat(FM interaction vector (E), mlp_out); logit = FM second order + Linear(mlp_out)."""

    def __init__(self, config: FlipConfig):
        super().__init__(config)
        self.mlp = MLP(self.num_fields * self.embedding_dim, config.mlp_hidden_sizes, config.backbone_dropout)
        self.output_size = self.embedding_dim + self.mlp.output_size
        self.logit = nn.Linear(self.mlp.output_size, 1)

    def forward(self, field_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        interaction = 0.5 * (field_embeddings.sum(1).pow(2) - field_embeddings.pow(2).sum(1))  # (B, E)
        deep = self.mlp(field_embeddings.flatten(1))  # (B, mlp_out)
        hidden = torch.cat([interaction, deep], dim=-1)
        return hidden, interaction.sum(-1) + self.logit(deep).squeeze(-1)


class InteractingLayer(nn.Module):
    """AutoInt interacting layer: multi-head scaled dot-product self-attention over fields, residual projection,
    ReLU (DeepCTR's default leaves the scores unscaled)."""

    def __init__(self, embedding_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim, bias=False)
        self.residual = nn.Linear(embedding_dim, embedding_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, E) -> (B, F, E)."""
        batch, fields, dim = x.shape
        q, k, v = self.qkv(x).view(batch, fields, 3, self.num_heads, dim // self.num_heads).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        attended = attended.transpose(1, 2).reshape(batch, fields, dim)  # (B, F, E)
        return torch.relu(attended + self.residual(x))


class AutoIntBackbone(TabularBackbone):
    """AutoInt+: interacting layers and MLP in parallel; hidden = concat(flattened attention out, mlp_out)."""

    def __init__(self, config: FlipConfig):
        super().__init__(config)
        self.layers = nn.Sequential(
            *(InteractingLayer(config.embedding_dim, config.autoint_heads) for _ in range(config.autoint_layers))
        )
        input_size = self.num_fields * self.embedding_dim
        self.mlp = MLP(input_size, config.mlp_hidden_sizes, config.backbone_dropout)
        self.output_size = input_size + self.mlp.output_size
        self.logit = nn.Linear(self.output_size, 1)

    def forward(self, field_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended = self.layers(field_embeddings).flatten(1)  # (B, F*E)
        hidden = torch.cat([attended, self.mlp(field_embeddings.flatten(1))], dim=-1)  # (B, H)
        return hidden, self.logit(hidden).squeeze(-1)


TABULAR_BACKBONES: dict[str, type[TabularBackbone]] = {
    "dcnv2": DCNv2Backbone,
    "deepfm": DeepFMBackbone,
    "autoint": AutoIntBackbone,
}


def build_backbone(config: FlipConfig) -> TabularBackbone:
    """The backbone named by `config.backbone`."""
    return TABULAR_BACKBONES[config.backbone](config)
