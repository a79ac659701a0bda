"""FLIP: fine-grained alignment between an ID-based CTR model and a pretrained language model.

Read top-down: loss helpers -> outputs -> blocks -> FlipPreTrainedModel -> FlipModel -> FlipForPretraining ->
FlipForCTR. Shape letters: B batch (B_global: gathered over processes), F fields, L tokens, D text hidden size,
E field embedding size, H tabular representation size, P projection size, M MTM vector size, V_tok text
vocabulary, V_tab total features, N selected (masked) positions, K noise ids.
"""

import inspect
import math
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_flip import FLIP_AUTO_MAP, NUM_RESERVED_FIELD_IDS, FlipConfig
from .tabular_backbones import CrossNetMix, build_backbone

IGNORE_INDEX = -100

# ----------------------------------------------------------------------------------------------------------------
# Loss helpers
# ----------------------------------------------------------------------------------------------------------------


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather (B, ...) from every process into (B * world, ...), rank order, keeping the gradient.

    A no-op unless `torch.distributed` is initialised with several processes. The backward pass sums the
    gradients of every process's loss into each local slice, so DDP gradient averaging of per-process losses
    reproduces the single-process gradient on the concatenated batch (equal local batch sizes assumed).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    # torch's autograd-aware functional collective (`torch.distributed.nn.functional.all_gather` is deprecated):
    # the backward pass is a reduce-scatter, which sums every process's gradient into the local slice
    from torch.distributed._functional_collectives import all_gather_tensor_autograd

    return all_gather_tensor_autograd(tensor.contiguous(), gather_dim=0, group=dist.group.WORLD)


def per_process_divisor(count: int, device: torch.device) -> float | torch.Tensor:
    """Divisor of a process's loss sum over `count` items (masked tokens, masked fields) such that DDP's gradient
    average over processes is the mean over the items of every process: the total count over the number of
    processes (2 processes x batch B == 1 process x batch 2B when the processes hold different counts). Without
    several processes `max(count, 1)`. Every process must call it (an all-reduce), also with `count == 0`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return max(count, 1)
    total = torch.tensor(float(count), device=device)
    dist.all_reduce(total)
    return total.clamp_min(1.0) / dist.get_world_size()


def contrastive_loss(
    tabular_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of the local rows against the columns of every process.

    Args:
        tabular_embeds, text_embeds: (B, P) local projected views of the same rows.
        temperature: scalar tensor.
    Returns:
        loss (scalar) and logits_per_tabular (B, B_global).
    """
    all_text = gather_with_grad(text_embeds)  # (B_global, P)
    all_tabular = gather_with_grad(tabular_embeds)  # (B_global, P)
    rank = dist.get_rank() if len(all_text) > len(text_embeds) else 0
    targets = torch.arange(len(tabular_embeds), device=tabular_embeds.device) + rank * len(tabular_embeds)
    logits_per_tabular = tabular_embeds @ all_text.T / temperature  # (B, B_global)
    logits_per_text = text_embeds @ all_tabular.T / temperature  # (B, B_global)
    loss = (F.cross_entropy(logits_per_tabular, targets) + F.cross_entropy(logits_per_text, targets)) / 2
    return loss, logits_per_tabular


def binary_nce_loss(scores: torch.Tensor, log_noise_probs: torch.Tensor, num_noise: int) -> torch.Tensor:
    """Binary noise-contrastive estimation (Gutmann & Hyvarinen; reference `nce/IndexLinear`).

    Args:
        scores: (N, 1 + K) unnormalised log-scores, column 0 the target, the others noise samples.
        log_noise_probs: (N, 1 + K) log q(v) of the same candidates.
    Returns:
        sum over the 1 + K binary terms and over N (the caller divides by N).
    """
    logits = scores - log_noise_probs - math.log(num_noise)  # log-odds of "data" vs "noise"
    targets = torch.zeros_like(logits)
    targets[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")


def sampled_softmax_loss(
    scores: torch.Tensor, log_noise_probs: torch.Tensor, accidental: torch.Tensor
) -> torch.Tensor:
    """Sampled softmax with log-q correction; noise samples equal to the target (`accidental`, (N, 1 + K)) are
    removed. Same layout as `binary_nce_loss`; sum over N."""
    logits = (scores - log_noise_probs).masked_fill(accidental, float("-inf"))  # (N, 1 + K)
    targets = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    return F.cross_entropy(logits, targets, reduction="sum")


def _accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Top-1 accuracy of (N, C) logits against (N,) targets; None when N == 0 (nothing to log)."""
    return (logits.argmax(-1) == targets).float().mean() if len(targets) else None


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FlipModelOutput(ModelOutput):
    """
    Output of [`FlipModel`]; each field is present when its tower ran.

    Args:
        tabular_embeds (`torch.FloatTensor` of shape `(B, P)`): projected tabular view.
        text_embeds (`torch.FloatTensor` of shape `(B, P)`): projected text view.
        tabular_hidden (`torch.FloatTensor` of shape `(B, H)`): backbone representation.
        text_pooled (`torch.FloatTensor` of shape `(B, D)`): pooled text representation (CLS or mean).
        text_last_hidden_state (`torch.FloatTensor` of shape `(B, L, D)`): token states of the text tower.
    """

    tabular_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    tabular_hidden: torch.FloatTensor | None = None
    text_pooled: torch.FloatTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None


@dataclass
class FlipPretrainingOutput(ModelOutput):
    """
    Output of [`FlipForPretraining`]. Losses are present when `return_loss=True` and their switch is on.

    Args:
        loss (`torch.FloatTensor` scalar): weighted sum of the enabled losses.
        icl_loss (`torch.FloatTensor` scalar): instance-level contrastive loss.
        mlm_loss (`torch.FloatTensor` scalar): masked language modelling loss (mean over masked tokens; with
            several processes, a process's sum over the mean count per process, see `per_process_divisor`).
        mtm_loss (`torch.FloatTensor` scalar): masked tabular modelling loss (mean over masked fields, likewise).
        logits_per_tabular (`torch.FloatTensor` of shape `(B, B_global)`): tabular-to-text similarities / tau
            (present when `use_icl`).
        mlm_accuracy (`torch.FloatTensor` scalar): top-1 accuracy over V_tok at the masked tokens.
        mtm_accuracy (`torch.FloatTensor` scalar): top-1 accuracy at the masked fields over the candidates
            the loss uses (target + K noise ids, or the field's vocabulary for `"softmax"`).
        tabular_embeds (`torch.FloatTensor` of shape `(B, P)`): projected complete rows (when `use_icl`).
        text_embeds (`torch.FloatTensor` of shape `(B, P)`): projected complete texts (when `use_icl`).
    """

    loss: torch.FloatTensor | None = None
    icl_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mtm_loss: torch.FloatTensor | None = None
    logits_per_tabular: torch.FloatTensor | None = None
    mlm_accuracy: torch.FloatTensor | None = None
    mtm_accuracy: torch.FloatTensor | None = None
    tabular_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


@dataclass
class FlipCTROutput(ModelOutput):
    """
    Output of [`FlipForCTR`]. Component logits and losses are present for the towers the `ctr_mode` uses;
    losses only when `labels` are given.

    Args:
        loss (`torch.FloatTensor` scalar): `joint_loss + id_loss + text_loss` in `"joint"` mode, else the one
            tower's BCE; in training, plus `l2_loss` when `config.embedding_l2 > 0`.
        logits (`torch.FloatTensor` of shape `(B,)`): final click logits.
        id_logits (`torch.FloatTensor` of shape `(B,)`): tabular tower logits (modes `"id"`, `"joint"`).
        text_logits (`torch.FloatTensor` of shape `(B,)`): text tower logits (modes `"text"`, `"joint"`).
        joint_loss (`torch.FloatTensor` scalar): BCE of the combined logits (`"joint"`).
        id_loss (`torch.FloatTensor` scalar): BCE of `id_logits`.
        text_loss (`torch.FloatTensor` scalar): BCE of `text_logits`.
        alpha (`torch.FloatTensor` scalar): weight of the ID logit in `"joint"` mode.
        l2_loss (`torch.FloatTensor` scalar): `embedding_l2 * (|E|^2 + |E_linear|^2)` (training, when > 0).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    id_logits: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None
    joint_loss: torch.FloatTensor | None = None
    id_loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    alpha: torch.FloatTensor | None = None
    l2_loss: torch.FloatTensor | None = None


def in_field_order(output: ModelOutput) -> ModelOutput:
    """`output`, filled in one field at a time (its keys in the order they were set), rebuilt with its keys in the
    order of its fields: the `transformers` convention that `output[0]`, `to_tuple()` and the `Trainer`'s
    predictions rely on (`loss` first when computed, then `logits`)."""
    return type(output)(**dict(output.items()))


# ----------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------


def _text_model_kwargs(text_config: PreTrainedConfig) -> dict:
    """`add_pooling_layer=False` for encoders whose class accepts it (the pooler is never used)."""
    if type(text_config) not in MODEL_MAPPING:  # e.g. a remote-code encoder: build it as it comes
        return {}
    accepts_pooling_flag = (
        "add_pooling_layer" in inspect.signature(MODEL_MAPPING[type(text_config)].__init__).parameters
    )
    return {"add_pooling_layer": False} if accepts_pooling_flag else {}


@contextmanager
def _without_pooler_report(text_config: PreTrainedConfig, pooling_kwargs: dict):
    """While loading an encoder built without its pooler (`add_pooling_layer=False`), its checkpoint's pooler weights
    are expected leftovers: keep them out of transformers' load report (a warning table on every run)."""
    if not pooling_kwargs:
        yield
        return
    model_class = MODEL_MAPPING[type(text_config)]
    saved = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected", _NOT_SET)
    ignored = model_class._keys_to_ignore_on_load_unexpected or []
    model_class._keys_to_ignore_on_load_unexpected = [*ignored, r"pooler\."]
    try:
        yield
    finally:
        if saved is _NOT_SET:
            del model_class._keys_to_ignore_on_load_unexpected
        else:
            model_class._keys_to_ignore_on_load_unexpected = saved


_NOT_SET = object()


class FlipTabularModel(nn.Module):
    """Shared field embedding table (local ids + per-field offsets), first-order term and ID backbone.

    `forward(field_ids (B, F) local ids) -> (hidden (B, H), logit (B,))`.
    """

    def __init__(self, config: FlipConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.num_features, config.embedding_dim)
        self.linear = nn.Embedding(config.num_features, 1)  # first-order (wide) term
        # non-persistent, so filled again in _init_weights (from_pretrained builds on the meta device)
        self.register_buffer("offsets", torch.tensor(config.field_offsets), persistent=False)
        self.backbone = build_backbone(config)
        self.output_size = self.backbone.output_size

    def forward(self, field_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        global_ids = field_ids + self.offsets  # (B, F)
        hidden, logit = self.backbone(self.embeddings(global_ids))  # (B, H), (B,)
        return hidden, logit + self.linear(global_ids).sum(dim=(1, 2))


class FlipProjection(nn.Module):
    """Projection into the common space: p = Linear(x); LayerNorm(p + Dropout(Linear(GELU(p)))). (B, in) -> (B, P)."""

    def __init__(self, input_size: int, projection_dim: int, dropout: float):
        super().__init__()
        self.projection = nn.Linear(input_size, projection_dim)
        self.activation = nn.GELU()
        self.fc = nn.Linear(projection_dim, projection_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(projection_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        return self.layer_norm(projected + self.dropout(self.fc(self.activation(projected))))


class FlipMLMHead(nn.Module):
    """MLM head fusing masked-text token states with the complete row: concat -> Linear -> tanh -> dropout ->
    decoder = the text tower's input word embeddings (passed in, so tied by construction) + own bias."""

    def __init__(self, config: FlipConfig, tabular_size: int):
        super().__init__()
        text_size = config.text_config.hidden_size
        self.dense = nn.Linear(text_size + tabular_size, text_size)
        self.dropout = nn.Dropout(config.mlm_head_dropout)
        self.bias = nn.Parameter(torch.zeros(config.text_config.vocab_size))

    def forward(
        self, token_states: torch.Tensor, tabular_hidden: torch.Tensor, word_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """token_states (N, D), tabular_hidden (N, H), word_embeddings (V_tok, D) -> logits (N, V_tok)."""
        fused = self.dropout(torch.tanh(self.dense(torch.cat([token_states, tabular_hidden], dim=-1))))
        return F.linear(fused, word_embeddings, self.bias)


class FlipMTMHead(nn.Module):
    """MTM head: a query from the masked row attends over the complete text; one M-vector per field is scored
    against an output feature table (V_tab, M) + bias. Holds the noise distribution `noise_probs` (V_tab,)."""

    def __init__(self, config: FlipConfig, tabular_size: int):
        super().__init__()
        text_size = config.text_config.hidden_size
        self.num_fields = config.num_fields
        self.query = nn.Linear(tabular_size, text_size)
        self.query_norm = nn.LayerNorm(text_size)
        self.field_vectors = nn.Linear(tabular_size + text_size, config.num_fields * config.mtm_embedding_dim)
        self.feature_embeddings = nn.Embedding(config.num_features, config.mtm_embedding_dim)
        self.feature_bias = nn.Parameter(torch.zeros(config.num_features))
        self.register_buffer("noise_probs", torch.zeros(config.num_features))  # persistent; set in _init_weights

    def forward(
        self, tabular_hidden: torch.Tensor, text_states: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """tabular_hidden (B, H) of the masked row, text_states (B, L, D) of the complete text,
        attention_mask (B, L) -> field vectors (B, F, M)."""
        query = self.query_norm(self.query(tabular_hidden))[:, None, None, :]  # (B, 1, 1, D)
        keys = text_states.unsqueeze(1)  # (B, 1, L, D)
        padding_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        context = F.scaled_dot_product_attention(query, keys, keys, attn_mask=padding_mask).flatten(1)  # (B, D)
        vectors = self.field_vectors(torch.cat([tabular_hidden, context], dim=-1))
        return vectors.view(len(vectors), self.num_fields, -1)

    def score(self, vectors: torch.Tensor, feature_ids: torch.Tensor) -> torch.Tensor:
        """vectors (N, M), feature_ids (N, C) global ids -> scores (N, C)."""
        return (
            torch.einsum("nm,ncm->nc", vectors, self.feature_embeddings(feature_ids)) + self.feature_bias[feature_ids]
        )

    def log_noise_probs(self, feature_ids: torch.Tensor) -> torch.Tensor:
        """log q(v), clamped at 1e-10 for ids never drawn as noise (e.g. unseen targets)."""
        return safe_log(self.noise_probs[feature_ids])

    @torch.no_grad()
    def set_noise_distribution(self, probs: torch.Tensor) -> None:
        """Copy q (V_tab,) and restart the output bias at log q (see `_init_weights`)."""
        self.noise_probs.copy_(probs)
        self.feature_bias.copy_(safe_log(probs))


def safe_log(probs: torch.Tensor) -> torch.Tensor:
    """log of probabilities, clamped at 1e-10 (ids that are never drawn, e.g. [MASK] and OOV)."""
    return probs.clamp_min(1e-10).log()


# ----------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------


class FlipPreTrainedModel(PreTrainedModel):
    config_class = FlipConfig
    base_model_prefix = "flip"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    accepts_loss_kwargs = False

    def __init__(self, config: FlipConfig, *inputs, **kwargs):
        config.validate_flip_config()  # again: `from_pretrained(dir, **overrides)` sets fields after the checks
        super().__init__(config, *inputs, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        config = self.config
        if isinstance(module, FlipTabularModel):  # runs after its children, so it overrides their default init
            init.normal_(module.embeddings.weight, std=config.embedding_init_std)
            init.normal_(module.linear.weight, std=config.embedding_init_std)
            init.copy_(module.offsets, torch.tensor(config.field_offsets))
        elif isinstance(module, CrossNetMix):
            for weight in (module.u, module.v, module.c):  # Xavier-normal of each (rows, cols) matrix
                init.normal_(weight, std=math.sqrt(2.0 / (weight.shape[-2] + weight.shape[-1])))
            init.zeros_(module.bias)
        elif isinstance(module, FlipMLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, FlipMTMHead):
            bound = 1.0 / math.sqrt(config.mtm_embedding_dim)  # the reference's output table init, U(+-1/sqrt(M))
            init.uniform_(module.feature_embeddings.weight, -bound, bound)
            # The output bias starts at log q (the reference's `log q + log V`, minus its `log V` in the score):
            # every candidate then starts at NCE log-odds -log K instead of the rare features' -log(K q).
            noise_probs = uniform_noise_probs(config.field_vocab_sizes)
            init.copy_(module.noise_probs, noise_probs)
            init.copy_(module.feature_bias, safe_log(noise_probs))
        elif isinstance(module, FlipForPretraining):
            init.constant_(module.log_temperature, math.log(config.temperature))
        elif isinstance(module, FlipForCTR) and config.ctr_mode == "joint":
            init.constant_(module.alpha, config.joint_alpha_init)
            init.zeros_(module.joint_bias)

    @classmethod
    def from_text_pretrained(
        cls, text_model_name_or_path: str, *, text_model_kwargs: dict | None = None, **config_kwargs
    ) -> "FlipPreTrainedModel":
        """Build a new FLIP model around a pretrained text encoder, keeping its weights.

        Args:
            text_model_name_or_path: Hub id or local path of any `AutoModel` encoder.
            text_model_kwargs: extra `AutoModel.from_pretrained` arguments (e.g. `dtype`, `attn_implementation`).
            **config_kwargs: `FlipConfig` fields (schema, backbone, losses, ...).
        """
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        text_model_kwargs = {"use_safetensors": True, **(text_model_kwargs or {})}  # never unpickle weights
        pooling_kwargs = _text_model_kwargs(text_config)
        with _named_weight_errors(text_model_name_or_path), _without_pooler_report(text_config, pooling_kwargs):
            text_model = AutoModel.from_pretrained(text_model_name_or_path, **pooling_kwargs, **text_model_kwargs)
        return cls(FlipConfig(text_config=text_model.config, **config_kwargs), text_model=text_model)

    def freeze_unused_parameters(self) -> None:
        """Set `requires_grad=False` on the parameters no output of this head reaches, so that every trainable
        parameter gets a gradient (DDP without `find_unused_parameters`). Heads override it; called at build and
        again after `from_pretrained` (loading re-creates parameters as trainable)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, loading weights only from safetensors files (`use_safetensors=True`
        unless given: no pickled `pytorch_model.bin`), and naming the file when it is truncated or corrupt."""
        kwargs.setdefault("use_safetensors", True)
        with _named_weight_errors(pretrained_model_name_or_path):
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_unused_parameters()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with an `auto_map` that lets every Auto class load any FLIP head."""
        if self.is_remote_code():
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **FLIP_AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)


@contextmanager
def _named_weight_errors(source):
    """Re-raise safetensors' bare header errors ("incomplete metadata", "header too small") as an `OSError` that
    names the weights file(s) of `source` and the fix."""
    try:
        yield
    except SafetensorError as error:
        source = str(source)
        files = sorted(f for f in os.listdir(source) if f.endswith(".safetensors")) if os.path.isdir(source) else []
        where = ", ".join(os.path.join(source, f) for f in files) or f"the safetensors weights of {source}"
        raise OSError(
            f"Cannot read {where}: {error}. The file is truncated or corrupted (an interrupted download or copy?): "
            "download or save it again"
        ) from error


def uniform_noise_probs(field_vocab_sizes: Sequence[int]) -> torch.Tensor:
    """(V_tab,) uniform over the non-reserved ids of every field, 0 at [MASK] and OOV."""
    probs = torch.cat([torch.arange(size) >= NUM_RESERVED_FIELD_IDS for size in field_vocab_sizes]).float()
    return probs / probs.sum()


# ----------------------------------------------------------------------------------------------------------------
# FlipModel: the two towers and their projections
# ----------------------------------------------------------------------------------------------------------------


# Head weights of the other classes: skipped without a report when a checkpoint is loaded into a class without them.
_HEAD_KEY_PATTERNS = [
    r"^mlm_head\.",
    r"^mtm_head\.",
    r"^log_temperature$",
    r"^text_head\.",
    r"^alpha$",
    r"^joint_bias$",
]


class FlipModel(FlipPreTrainedModel):
    """The tabular tower, the text tower and their projections into the common space (as CLIP's `CLIPModel`).

    Args:
        config: the FLIP config.
        text_model: an already built (e.g. pretrained) text encoder to use instead of a fresh one.
        add_text_model: build the text tower; defaults to `config.ctr_mode != "id"` (or True when `text_model` is
            given). Without it `text_model` and `text_projection` are None.
    """

    _keys_to_ignore_on_load_unexpected = _HEAD_KEY_PATTERNS

    def __init__(
        self, config: FlipConfig, text_model: PreTrainedModel | None = None, add_text_model: bool | None = None
    ):
        super().__init__(config)
        if add_text_model is None:
            add_text_model = text_model is not None or config.ctr_mode != "id"
        if text_model is not None and not add_text_model:
            raise ValueError("a text_model was given but the text tower is disabled (ctr_mode='id')")
        self.tabular_model = FlipTabularModel(config)
        self.tabular_projection = FlipProjection(
            self.tabular_model.output_size, config.projection_dim, config.projection_dropout
        )
        self.text_model = None
        self.text_projection = None
        if add_text_model:
            if text_model is None:
                text_model = AutoModel.from_config(config.text_config, **_text_model_kwargs(config.text_config))
            # one config object (as VisionTextDualEncoderModel does), keeping the encoder's attention implementation
            config.text_config._attn_implementation = text_model.config._attn_implementation
            text_model.config = config.text_config
            self.text_model = text_model
            self.text_projection = FlipProjection(
                config.text_config.hidden_size, config.projection_dim, config.projection_dropout
            )
        self.post_init()
        if not add_text_model:  # a checkpoint's text tower is skipped on purpose: no unexpected-keys report
            self._keys_to_ignore_on_load_unexpected |= {r"^(flip\.)?text_(model|projection)\."}

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask (B, L) -> token states (B, L, D) and pooled text (B, D)."""
        if self.text_model is None:
            raise ValueError("this FLIP model has no text tower (built with ctr_mode='id')")
        states = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.text_pooling == "cls":
            return states, states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        return states, (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def get_tabular_features(self, field_ids: torch.Tensor) -> torch.Tensor:
        """field_ids (B, F) local ids -> projected tabular embeddings (B, P)."""
        return self.tabular_projection(self.tabular_model(field_ids)[0])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, L) -> projected text embeddings (B, P)."""
        return self.text_projection(self.encode_text(input_ids, attention_mask)[1])

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        field_ids: torch.Tensor | None = None,
    ) -> FlipModelOutput:
        """Encode whichever views are given: text (B, L) and/or rows (B, F). Shapes: see `FlipModelOutput`."""
        output = FlipModelOutput()
        if field_ids is not None:
            output.tabular_hidden = self.tabular_model(field_ids)[0]
            output.tabular_embeds = self.tabular_projection(output.tabular_hidden)
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            output.text_last_hidden_state, output.text_pooled = self.encode_text(input_ids, attention_mask)
            output.text_embeds = self.text_projection(output.text_pooled)
        return in_field_order(output)


# ----------------------------------------------------------------------------------------------------------------
# Pretraining: ICL + MLM + MTM
# ----------------------------------------------------------------------------------------------------------------


class FlipForPretraining(FlipPreTrainedModel):
    """FLIP pretraining with two text passes (complete, masked) and two tabular passes (complete, masked)."""

    def __init__(self, config: FlipConfig, text_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.flip = FlipModel(config, text_model=text_model, add_text_model=True)
        tabular_size = self.flip.tabular_model.output_size
        log_temperature = torch.tensor(math.log(config.temperature))
        if config.learn_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:  # a buffer, so that loading or optimisers never make it trainable
            self.register_buffer("log_temperature", log_temperature)
        self.mlm_head = FlipMLMHead(config, tabular_size) if config.use_mlm else None
        self.mtm_head = FlipMTMHead(config, tabular_size) if config.use_mtm else None
        self.freeze_unused_parameters()
        self.post_init()

    def freeze_unused_parameters(self) -> None:
        """No pretraining loss reaches the CTR logit layers, nor the projections without ICL: freeze them."""
        tabular_model = self.flip.tabular_model
        _freeze(tabular_model.linear, tabular_model.backbone.logit)
        if not self.config.use_icl:
            _freeze(self.flip.tabular_projection, self.flip.text_projection)

    def set_feature_frequencies(self, counts: Sequence[int]) -> None:
        """Use the training-split feature counts (V_tab,), global order, as the MTM noise distribution (and as the
        starting output bias: call it before training)."""
        counts = torch.as_tensor(counts, dtype=torch.float)
        if counts.shape != (self.config.num_features,) or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError(f"counts must be {self.config.num_features} non-negative numbers with a positive sum")
        if self.mtm_head is not None:
            self.mtm_head.set_noise_distribution(counts / counts.sum())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        field_ids: torch.Tensor,
        masked_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        masked_field_ids: torch.Tensor | None = None,
        mtm_labels: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> FlipPretrainingOutput:
        """
        Args:
            input_ids, attention_mask: (B, L) complete text.
            field_ids: (B, F) complete row, local ids.
            masked_input_ids, mlm_labels: (B, L) masked text and original tokens at masked positions (-100
                elsewhere); needed when `use_mlm` and `return_loss`.
            masked_field_ids, mtm_labels: (B, F) masked row and original local ids at masked fields (-100
                elsewhere; reserved ids are ignored); needed when `use_mtm` and `return_loss`.
            return_loss: compute the losses; without it only the ICL embeddings and logits are returned.
        """
        config = self.config
        output = FlipPretrainingOutput()
        tabular_hidden = self.flip.tabular_model(field_ids)[0]  # (B, H) complete row
        text_states, text_pooled = self.flip.encode_text(input_ids, attention_mask)  # (B, L, D), (B, D)
        losses = {}
        if config.use_icl:
            output.tabular_embeds = self.flip.tabular_projection(tabular_hidden)
            output.text_embeds = self.flip.text_projection(text_pooled)
            losses["icl"], output.logits_per_tabular = contrastive_loss(
                output.tabular_embeds, output.text_embeds, self.log_temperature.exp()
            )
        if return_loss and config.use_mlm:
            _require(masked_input_ids=masked_input_ids, mlm_labels=mlm_labels)
            losses["mlm"], output.mlm_accuracy = self._mlm_loss(
                masked_input_ids, attention_mask, mlm_labels, tabular_hidden
            )
        if return_loss and config.use_mtm:
            _require(masked_field_ids=masked_field_ids, mtm_labels=mtm_labels)
            losses["mtm"], output.mtm_accuracy = self._mtm_loss(
                masked_field_ids, mtm_labels, text_states, attention_mask
            )
        if return_loss:
            output.icl_loss, output.mlm_loss, output.mtm_loss = (losses.get(name) for name in ("icl", "mlm", "mtm"))
            output.loss = sum(getattr(config, f"{name}_weight") * loss for name, loss in losses.items())
        return in_field_order(output)

    def _mlm_loss(
        self,
        masked_input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_labels: torch.Tensor,
        tabular_hidden: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked-text pass; logits only at the N masked positions. Returns (loss, accuracy)."""
        masked_states = self.flip.encode_text(masked_input_ids, attention_mask)[0]  # (B, L, D)
        rows, cols = (mlm_labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,), (N,)
        word_embeddings = self.flip.text_model.get_input_embeddings().weight  # (V_tok, D)
        logits = self.mlm_head(masked_states[rows, cols], tabular_hidden[rows], word_embeddings)  # (N, V_tok)
        targets = mlm_labels[rows, cols]
        loss = F.cross_entropy(logits, targets, reduction="sum") / per_process_divisor(len(targets), logits.device)
        return loss, _accuracy(logits, targets)

    def _mtm_loss(
        self,
        masked_field_ids: torch.Tensor,
        mtm_labels: torch.Tensor,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked-row pass; predicts the original feature of the N masked (non-reserved) fields."""
        masked_hidden = self.flip.tabular_model(masked_field_ids)[0]  # (B, H)
        field_vectors = self.mtm_head(masked_hidden, text_states, attention_mask)  # (B, F, M)
        rows, fields = (mtm_labels >= NUM_RESERVED_FIELD_IDS).nonzero(as_tuple=True)  # (N,), (N,)
        vectors = field_vectors[rows, fields]  # (N, M)
        targets = self.flip.tabular_model.offsets[fields] + mtm_labels[rows, fields]  # (N,) global ids
        divisor = per_process_divisor(len(targets), vectors.device)  # before any return: every process joins
        if len(targets) == 0:  # nothing to predict: a zero loss that keeps the graph (DDP), no accuracy
            return field_vectors.sum() * 0.0, None
        if self.config.mtm_loss == "softmax":
            loss, accuracy = self._field_softmax_loss(vectors, targets, fields)
            return loss / divisor, accuracy
        num_noise = self.config.nce_num_noise
        noise = torch.multinomial(self.mtm_head.noise_probs, len(targets) * num_noise, replacement=True)
        candidates = torch.cat([targets[:, None], noise.view(len(targets), num_noise)], dim=1)  # (N, 1 + K)
        scores = self.mtm_head.score(vectors, candidates)  # (N, 1 + K)
        log_q = self.mtm_head.log_noise_probs(candidates)
        accidental = candidates == targets[:, None]
        accidental[:, 0] = False
        if self.config.mtm_loss == "nce":
            loss = binary_nce_loss(scores, log_q, num_noise)
        else:
            loss = sampled_softmax_loss(scores, log_q, accidental)
        return loss / divisor, _accuracy(scores.masked_fill(accidental, float("-inf")), torch.zeros_like(targets))

    def _field_softmax_loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, fields: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # N > 0
        """Exact softmax over each masked field's own non-reserved vocabulary, grouped by field: (sum over N,
        accuracy)."""
        loss, correct = vectors.new_zeros(()), vectors.new_zeros(())
        for field in fields.unique().tolist():
            selected = fields == field
            start = self.config.field_offsets[field] + NUM_RESERVED_FIELD_IDS
            end = self.config.field_offsets[field] + self.config.field_vocab_sizes[field]
            candidates = torch.arange(start, end, device=vectors.device).expand(int(selected.sum()), -1)
            logits = self.mtm_head.score(vectors[selected], candidates)  # (N_f, V_f - 2)
            local_targets = targets[selected] - start
            loss = loss + F.cross_entropy(logits, local_targets, reduction="sum")
            correct = correct + (logits.argmax(-1) == local_targets).sum()
        return loss, correct / len(targets)


def _freeze(*modules: nn.Module | None) -> None:
    for module in modules:
        if module is not None:
            module.requires_grad_(False)


def _require(**tensors: torch.Tensor | None) -> None:
    missing = [name for name, tensor in tensors.items() if tensor is None]
    if missing:
        raise ValueError(f"{missing} are required for this loss (or turn it off in the config / return_loss=False)")


# ----------------------------------------------------------------------------------------------------------------
# CTR finetuning: FLIP_ID, FLIP_PLM and joint FLIP
# ----------------------------------------------------------------------------------------------------------------


class FlipForCTR(FlipPreTrainedModel):
    """CTR head on the (pretrained) towers, by `config.ctr_mode`:

    - `"id"`: logit = tabular tower logit; the text tower is not built (serving cost of the plain ID model).
    - `"text"`: logit = Linear(D, 1)(pooled text).
    - `"joint"`: logit = alpha * z_id + (1 - alpha) * z_text + b, alpha an unconstrained scalar initialised at
      `config.joint_alpha_init` (0 by default: the reference's);
      loss = BCE(logit) + BCE(z_id) + BCE(z_text).

    In training, `config.embedding_l2 > 0` adds the reference's L2 penalty on the ID tables to the loss (`l2_loss`).
    """

    _keys_to_ignore_on_load_unexpected = _HEAD_KEY_PATTERNS

    def __init__(self, config: FlipConfig, text_model: PreTrainedModel | None = None):
        super().__init__(config)
        uses_text = config.ctr_mode != "id"
        self.flip = FlipModel(config, text_model=text_model, add_text_model=uses_text)
        self.text_head = nn.Linear(config.text_config.hidden_size, 1) if uses_text else None
        if config.ctr_mode == "joint":
            self.alpha = nn.Parameter(torch.zeros(()))
            self.joint_bias = nn.Parameter(torch.zeros(()))
        self.freeze_unused_parameters()
        self.post_init()

    def freeze_unused_parameters(self) -> None:
        """No CTR logit uses the projections, nor the tabular tower in `"text"` mode: freeze them."""
        _freeze(self.flip.tabular_projection, self.flip.text_projection)
        if self.config.ctr_mode == "text":
            _freeze(self.flip.tabular_model)

    def forward(
        self,
        field_ids: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> FlipCTROutput:
        """
        Args:
            field_ids: (B, F) local ids (modes `"id"`, `"joint"`).
            input_ids, attention_mask: (B, L) text (modes `"text"`, `"joint"`).
            labels: (B,) 0/1 clicks.
        """
        mode = self.config.ctr_mode
        output = FlipCTROutput()
        if mode != "text":
            output.id_logits = self.flip.tabular_model(field_ids)[1]  # (B,)
        if mode != "id":
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            pooled = self.flip.encode_text(input_ids, attention_mask)[1]  # (B, D)
            output.text_logits = self.text_head(pooled).squeeze(-1)  # (B,)
        if mode == "joint":
            output.alpha = self.alpha
            output.logits = self.alpha * output.id_logits + (1 - self.alpha) * output.text_logits + self.joint_bias
        else:
            output.logits = output.id_logits if mode == "id" else output.text_logits
        if labels is not None:
            labels = labels.to(output.logits.dtype)
            output.id_loss = _bce(output.id_logits, labels)
            output.text_loss = _bce(output.text_logits, labels)
            output.joint_loss = _bce(output.logits, labels) if mode == "joint" else None
            output.loss = sum(
                loss for loss in (output.joint_loss, output.id_loss, output.text_loss) if loss is not None
            )
            if self.training and self.config.embedding_l2 > 0 and mode != "text":
                tables = self.flip.tabular_model
                output.l2_loss = self.config.embedding_l2 * (
                    tables.embeddings.weight.pow(2).sum() + tables.linear.weight.pow(2).sum()
                )
                output.loss = output.loss + output.l2_loss
        return in_field_order(output)


def _bce(logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor | None:
    return None if logits is None else F.binary_cross_entropy_with_logits(logits, labels)


__all__ = [
    "FlipCTROutput",
    "FlipForCTR",
    "FlipForPretraining",
    "FlipModel",
    "FlipModelOutput",
    "FlipPreTrainedModel",
    "FlipPretrainingOutput",
    "contrastive_loss",
    "gather_with_grad",
]
