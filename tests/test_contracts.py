"""docs/contracts.md between processing/ and modeling_flip/: ids, collator keys = forward arguments, schema sizes."""

import inspect

import pytest

import processing
from processing import FlipProcessor, PromptTemplate
from processing.collators import DataCollatorForCTR, DataCollatorForFlipPretraining
from tests._data_fixtures import ml_rows, ml_schema

modeling_flip = pytest.importorskip("modeling_flip")


def test_reserved_field_ids_agree():
    assert processing.FIELD_MASK_ID == modeling_flip.FIELD_MASK_ID == 0
    assert processing.FIELD_OOV_ID == modeling_flip.FIELD_OOV_ID == 1


def _features(tokenizer):
    enc = FlipProcessor(tokenizer, ml_schema(), PromptTemplate())(ml_rows(4))
    return [dict(zip(enc, values)) for values in zip(*enc.values())]


@pytest.mark.parametrize(
    ("collator_cls", "model_name"),
    [(DataCollatorForFlipPretraining, "FlipForPretraining"), (DataCollatorForCTR, "FlipForCTR")],
)
def test_collator_keys_are_forward_arguments(tiny_tokenizer, collator_cls, model_name):
    batch = collator_cls(tiny_tokenizer)(_features(tiny_tokenizer))
    forward_args = set(inspect.signature(getattr(modeling_flip, model_name).forward).parameters)
    assert set(batch) <= forward_args, set(batch) - forward_args


def test_schema_sizes_fit_a_flip_config():
    schema = ml_schema()
    config = modeling_flip.FlipConfig(field_names=schema.field_names, field_vocab_sizes=schema.field_vocab_sizes)
    schema.check_compatible(config)
    assert len(schema.feature_counts()) == sum(config.field_vocab_sizes)
    with pytest.raises(ValueError, match="field_vocab_sizes"):
        schema.check_compatible(
            modeling_flip.FlipConfig(field_names=schema.field_names, field_vocab_sizes=[3] * schema.num_fields)
        )
