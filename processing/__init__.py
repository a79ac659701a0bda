"""FLIP data side: schema, prompts, processor, collators, dataset recipes.

Importing it registers `FlipProcessor` with `AutoProcessor` for FLIP folders (and, through `modeling_flip`, the
FLIP config and models with the other Auto classes), so a saved folder loads without `trust_remote_code`.
"""

from transformers import AutoProcessor

from modeling_flip import FlipConfig

from .processing_flip import FlipProcessor, check_compatible
from .prompts import PromptTemplate
from .schema import FIELD_MASK_ID, FIELD_OOV_ID, FieldSpec, TabularSchema

FlipProcessor.register_for_auto_class("AutoProcessor")
AutoProcessor.register(FlipConfig, FlipProcessor, exist_ok=True)

__all__ = [
    "FIELD_MASK_ID",
    "FIELD_OOV_ID",
    "FieldSpec",
    "FlipProcessor",
    "PromptTemplate",
    "TabularSchema",
    "check_compatible",
]
