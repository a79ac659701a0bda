"""FLIP configuration: one config for the tabular tower, the nested text tower and the alignment heads."""

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

FIELD_MASK_ID = 0
FIELD_OOV_ID = 1
NUM_RESERVED_FIELD_IDS = 2

BACKBONES = ("dcnv2", "deepfm", "autoint")
CTR_MODES = ("id", "text", "joint")
MTM_LOSSES = ("nce", "sampled_softmax", "softmax")
TEXT_POOLINGS = ("cls", "mean")

# Written into every saved config, so that a directory saved from any head loads with every Auto class
# and `trust_remote_code=True` where this package is not importable.
FLIP_AUTO_MAP = {
    "AutoConfig": "configuration_flip.FlipConfig",
    "AutoModel": "modeling_flip.FlipModel",
    "AutoModelForPreTraining": "modeling_flip.FlipForPretraining",
    "AutoModelForSequenceClassification": "modeling_flip.FlipForCTR",
}


class FlipConfig(PreTrainedConfig):
    r"""
    Configuration of a FLIP model: an ID-based tabular tower, a Hugging Face text encoder (nested `text_config`),
    the projections into a common space and the pretraining / CTR heads. It holds no file paths.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text encoder (any `AutoModel` encoder). Defaults to a `BertConfig()`.
        field_names (`list[str]`, *optional*, defaults to `["field_0", "field_1"]`):
            Names of the tabular fields, in the order of `field_ids`.
        field_vocab_sizes (`list[int]`, *optional*, defaults to `[10, 10]`):
            Local vocabulary size of each field, counting the reserved [MASK] (`FIELD_MASK_ID`) and OOV
            (`FIELD_OOV_ID`) ids; each must be >= 3.
        embedding_dim (`int`, *optional*, defaults to 32):
            Size E of each field embedding.
        backbone (`str`, *optional*, defaults to `"dcnv2"`):
            ID backbone: `"dcnv2"` (DCN-Mix), `"deepfm"` or `"autoint"`.
        cross_layers (`int`, *optional*, defaults to 2):
            DCNv2: number of cross layers.
        num_experts (`int`, *optional*, defaults to 4):
            DCNv2: low-rank experts per cross layer.
        low_rank (`int`, *optional*, defaults to 32):
            DCNv2: rank of each expert.
        mlp_hidden_sizes (`list[int]`, *optional*, defaults to `[300, 300, 128]`):
            Hidden sizes of the deep (MLP) part of every backbone.
        backbone_dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the backbone MLP.
        autoint_layers (`int`, *optional*, defaults to 3):
            AutoInt: number of interacting (self-attention) layers.
        autoint_heads (`int`, *optional*, defaults to 2):
            AutoInt: attention heads; must divide `embedding_dim`.
        projection_dim (`int`, *optional*, defaults to 128):
            Size P of the common space of the contrastive loss.
        projection_dropout (`float`, *optional*, defaults to 0.2):
            Dropout inside both projection heads.
        temperature (`float`, *optional*, defaults to 0.7):
            Initial InfoNCE temperature (> 0).
        learn_temperature (`bool`, *optional*, defaults to `False`):
            Learn the temperature (stored as its logarithm).
        text_pooling (`str`, *optional*, defaults to `"cls"`):
            Sentence representation of the text tower: first token (`"cls"`) or masked `"mean"`.
        use_icl (`bool`, *optional*, defaults to `True`):
            Pretrain with the instance-level contrastive loss.
        use_mlm (`bool`, *optional*, defaults to `True`):
            Pretrain with masked language modelling helped by the complete row.
        use_mtm (`bool`, *optional*, defaults to `True`):
            Pretrain with masked tabular modelling helped by the complete text.
        icl_weight (`float`, *optional*, defaults to 1.0):
            Weight of the ICL loss.
        mlm_weight (`float`, *optional*, defaults to 1.0):
            Weight of the MLM loss.
        mtm_weight (`float`, *optional*, defaults to 1.0):
            Weight of the MTM loss.
        mlm_head_dropout (`float`, *optional*, defaults to 0.2):
            Dropout of the MLM fusion head.
        mtm_loss (`str`, *optional*, defaults to `"nce"`):
            MTM objective: `"nce"` (binary NCE, the paper's), `"sampled_softmax"` (log-q corrected) or
            `"softmax"` (exact softmax over the masked field's own vocabulary).
        nce_num_noise (`int`, *optional*, defaults to 25):
            Noise ids K per masked field for `"nce"` and `"sampled_softmax"`.
        mtm_embedding_dim (`int`, *optional*, defaults to 32):
            Size of the MTM per-field prediction vectors and output feature table.
        ctr_mode (`str`, *optional*, defaults to `"joint"`):
            CTR finetuning variant: `"id"` (tabular tower alone, no text tower built), `"text"` (text tower
            alone) or `"joint"` (both, adaptive combination of the two logits).
        joint_alpha_init (`float`, *optional*, defaults to 0.0):
            `"joint"` mode: initial value of the learned weight alpha of the ID logit (logit = alpha * z_id +
            (1 - alpha) * z_text + b). 0 is the reference's (the model starts as the text tower alone); Adam moves
            alpha by about the learning rate per step, so short finetunings may start it higher, e.g. 0.5.
        embedding_l2 (`float`, *optional*, defaults to 0.0):
            CTR finetuning, training only: add `embedding_l2 * (|E|^2 + |E_linear|^2)` (the squared Frobenius norms
            of the ID embedding and first-order tables, as the reference's DeepCTR regulariser) to the batch's mean
            BCE loss. The reference adds 1e-3 to a batch-**summed** BCE for FLIP_ID (batch 1024: 1e-3 / 1024 here)
            and 1e-4 to a mean BCE for the joint model.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal init of new linear layers.
        embedding_init_std (`float`, *optional*, defaults to 1e-4):
            Standard deviation of the normal init of the field embedding tables.
    """

    model_type = "flip"
    sub_configs_defaults: ClassVar[dict] = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    text_config: dict | PreTrainedConfig | None = None
    field_names: list[str] | None = None
    field_vocab_sizes: list[int] | None = None
    embedding_dim: int = 32
    backbone: str = "dcnv2"
    cross_layers: int = 2
    num_experts: int = 4
    low_rank: int = 32
    mlp_hidden_sizes: list[int] | None = None
    backbone_dropout: float = 0.0
    autoint_layers: int = 3
    autoint_heads: int = 2
    projection_dim: int = 128
    projection_dropout: float = 0.2
    temperature: float = 0.7
    learn_temperature: bool = False
    text_pooling: str = "cls"
    use_icl: bool = True
    use_mlm: bool = True
    use_mtm: bool = True
    icl_weight: float = 1.0
    mlm_weight: float = 1.0
    mtm_weight: float = 1.0
    mlm_head_dropout: float = 0.2
    mtm_loss: str = "nce"
    nce_num_noise: int = 25
    mtm_embedding_dim: int = 32
    ctr_mode: str = "joint"
    joint_alpha_init: float = 0.0
    embedding_l2: float = 0.0
    initializer_range: float = 0.02
    embedding_init_std: float = 1e-4

    def __post_init__(self, **kwargs):
        if self.field_names is None:
            self.field_names = ["field_0", "field_1"]
        if self.field_vocab_sizes is None:
            self.field_vocab_sizes = [10] * len(self.field_names)
        if self.mlp_hidden_sizes is None:
            self.mlp_hidden_sizes = [300, 300, 128]
        self.field_names = list(self.field_names)
        self.field_vocab_sizes = [int(size) for size in self.field_vocab_sizes]
        self.mlp_hidden_sizes = [int(size) for size in self.mlp_hidden_sizes]
        if isinstance(self.text_config, PreTrainedConfig):  # a copy: the caller's config (often a loaded encoder's)
            self.text_config = self.text_config.to_dict()  # must not be changed by this composite
        super().__post_init__(**kwargs)
        self.validate_flip_config()

    def validate_flip_config(self) -> None:
        """Raise a `ValueError` quoting the first inconsistent FLIP value (also called when a model is built)."""
        choices = {"backbone": BACKBONES, "ctr_mode": CTR_MODES, "mtm_loss": MTM_LOSSES, "text_pooling": TEXT_POOLINGS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if not self.field_names:
            raise ValueError(f"field_names must not be empty, got {self.field_names!r}")
        if len(set(self.field_names)) != len(self.field_names):
            raise ValueError(f"field_names must be unique, got {self.field_names!r}")
        if len(self.field_vocab_sizes) != len(self.field_names):
            raise ValueError(
                f"field_vocab_sizes has {len(self.field_vocab_sizes)} entries ({self.field_vocab_sizes!r}) "
                f"but there are {len(self.field_names)} field_names"
            )
        too_small = [size for size in self.field_vocab_sizes if size < NUM_RESERVED_FIELD_IDS + 1]
        if too_small:
            raise ValueError(f"every field_vocab_sizes entry must be >= 3 (2 reserved ids + 1 value), got {too_small}")
        positive = {
            "embedding_dim": self.embedding_dim,
            "cross_layers": self.cross_layers,
            "num_experts": self.num_experts,
            "low_rank": self.low_rank,
            "autoint_layers": self.autoint_layers,
            "autoint_heads": self.autoint_heads,
            "projection_dim": self.projection_dim,
            "nce_num_noise": self.nce_num_noise,
            "mtm_embedding_dim": self.mtm_embedding_dim,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if not self.mlp_hidden_sizes or min(self.mlp_hidden_sizes) < 1:
            raise ValueError(
                f"mlp_hidden_sizes must be a non-empty list of positive sizes, got {self.mlp_hidden_sizes}"
            )
        if self.backbone == "autoint" and self.embedding_dim % self.autoint_heads:
            raise ValueError(
                f"autoint_heads={self.autoint_heads} must divide embedding_dim={self.embedding_dim} for AutoInt"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for name in ("icl_weight", "mlm_weight", "mtm_weight", "embedding_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (self.use_icl or self.use_mlm or self.use_mtm):
            raise ValueError("at least one of use_icl, use_mlm, use_mtm must be True (all pretraining losses are off)")

    @property
    def num_fields(self) -> int:
        """Number of tabular fields F."""
        return len(self.field_names)

    @property
    def num_features(self) -> int:
        """Size V_tab of the shared feature table (sum of the field vocabularies)."""
        return sum(self.field_vocab_sizes)

    @property
    def field_offsets(self) -> list[int]:
        """`offsets[f] = sum(field_vocab_sizes[:f])`, plain Python (safe on the meta device)."""
        offsets, total = [], 0
        for size in self.field_vocab_sizes:
            offsets.append(total)
            total += size
        return offsets


__all__ = ["FIELD_MASK_ID", "FIELD_OOV_ID", "FlipConfig"]
