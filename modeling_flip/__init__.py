"""FLIP models for CTR prediction, Hugging Face native.

`import modeling_flip` registers the `flip` model type with `AutoConfig`, `AutoModel`, `AutoModelForPreTraining`
and `AutoModelForSequenceClassification`, and marks the classes for remote code, so saved directories carry
their code and an `auto_map` for `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from .configuration_flip import FIELD_MASK_ID, FIELD_OOV_ID, FlipConfig
from .modeling_flip import (
    FlipCTROutput,
    FlipForCTR,
    FlipForPretraining,
    FlipModel,
    FlipModelOutput,
    FlipPreTrainedModel,
    FlipPretrainingOutput,
)
from .tabular_backbones import TABULAR_BACKBONES, TabularBackbone

AutoConfig.register(FlipConfig.model_type, FlipConfig, exist_ok=True)
AutoModel.register(FlipConfig, FlipModel, exist_ok=True)
AutoModelForPreTraining.register(FlipConfig, FlipForPretraining, exist_ok=True)
AutoModelForSequenceClassification.register(FlipConfig, FlipForCTR, exist_ok=True)

FlipConfig.register_for_auto_class()
FlipModel.register_for_auto_class("AutoModel")
FlipForPretraining.register_for_auto_class("AutoModelForPreTraining")
FlipForCTR.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "FIELD_MASK_ID",
    "FIELD_OOV_ID",
    "TABULAR_BACKBONES",
    "FlipCTROutput",
    "FlipConfig",
    "FlipForCTR",
    "FlipForPretraining",
    "FlipModel",
    "FlipModelOutput",
    "FlipPreTrainedModel",
    "FlipPretrainingOutput",
    "TabularBackbone",
]
