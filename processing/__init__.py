"""FLIP data side: schema, prompts, processor, collators, dataset recipes."""

from .processing_flip import FlipProcessor, check_compatible
from .prompts import PromptTemplate
from .schema import FIELD_MASK_ID, FIELD_OOV_ID, FieldSpec, TabularSchema

FlipProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "FIELD_MASK_ID",
    "FIELD_OOV_ID",
    "FieldSpec",
    "FlipProcessor",
    "PromptTemplate",
    "TabularSchema",
    "check_compatible",
]
