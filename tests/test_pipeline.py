"""The `ctr-prediction` pipeline: raw rows -> the same probabilities as the model's own forward pass.

Also home of `tiny_ctr_dirs`, the tiny saved FlipForCTR + FlipProcessor folders the other "using a trained FLIP"
tests (export, scoring, plots) import."""

import pandas as pd
import pytest
import torch
from transformers import pipeline

from modeling_flip import FlipConfig, FlipForCTR
from processing import FlipProcessor, PromptTemplate
from tests._data_fixtures import ml_rows, ml_schema
from tests.test_modeling_flip import FlipModelTester
from training.pipeline import CtrPredictionPipeline, load_ctr_pipeline

MODES = ("id", "joint")


def save_tiny_ctr_model(path, mode: str, text_config, tokenizer, seed: int = 0) -> str:
    """A random tiny `FlipForCTR` (`mode`) for the ML-like schema + its processor, saved like a finetuning run."""
    schema = ml_schema()
    kwargs = FlipModelTester(text_config).config_kwargs(
        field_names=schema.field_names, field_vocab_sizes=schema.field_vocab_sizes, ctr_mode=mode
    )
    torch.manual_seed(seed)
    model = FlipForCTR(FlipConfig(text_config=text_config.to_dict(), **kwargs))
    if mode == "joint":  # alpha starts at 0: move it so both towers matter
        model.alpha.data.fill_(0.3)
    model.save_pretrained(path)
    FlipProcessor(tokenizer, schema, PromptTemplate(), max_length=64).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_ctr_dirs(tmp_path_factory, tiny_text_config, tiny_tokenizer) -> dict[str, str]:
    """`{"id": dir, "joint": dir}` of tiny saved CTR models (model + processor)."""
    root = tmp_path_factory.mktemp("tiny-ctr")
    return {mode: save_tiny_ctr_model(root / mode, mode, tiny_text_config, tiny_tokenizer) for mode in MODES}


def rows_frame(n: int = 9, offset: int = 100) -> pd.DataFrame:
    """n ML-like rows (unseen combinations, some OOV values) without the label."""
    return pd.DataFrame(ml_rows(n, offset)).drop(columns=["label"])


def reference_probs(model_dir: str, frame: pd.DataFrame) -> torch.Tensor:
    """sigmoid of the model's own forward logits on the processor's padded batch."""
    model = FlipForCTR.from_pretrained(model_dir).eval()
    batch = FlipProcessor.from_pretrained(model_dir)(frame, return_tensors="pt")
    inputs = {key: batch[key] for key in ("field_ids", "input_ids", "attention_mask")}
    with torch.no_grad():
        return torch.sigmoid(model(**inputs).logits)


@pytest.mark.parametrize("mode", MODES)
def test_pipeline_matches_model_forward(tiny_ctr_dirs, mode):
    frame = rows_frame()
    expected = reference_probs(tiny_ctr_dirs[mode], frame)
    ctr = pipeline("ctr-prediction", model=tiny_ctr_dirs[mode], device="cpu")
    assert isinstance(ctr, CtrPredictionPipeline)
    for batch_size in (1, 4):
        probs = ctr(frame.to_dict("records"), batch_size=batch_size)
        torch.testing.assert_close(torch.tensor(probs), expected, atol=1e-6, rtol=0)
    assert all(0.0 <= p <= 1.0 for p in probs)
    single = ctr(frame.iloc[0].to_dict())
    assert isinstance(single, float) and single == pytest.approx(float(expected[0]), abs=1e-6)


def test_pipeline_accepts_frames_and_columns(tiny_ctr_dirs):
    frame = rows_frame(5)
    ctr = load_ctr_pipeline(tiny_ctr_dirs["joint"], device="cpu")
    from_records = ctr(frame.to_dict("records"), batch_size=2)
    assert ctr(frame, batch_size=3) == pytest.approx(from_records, abs=1e-6)
    assert ctr(frame.to_dict("list")) == pytest.approx(from_records, abs=1e-6)


def test_pipeline_names_missing_columns(tiny_ctr_dirs):
    ctr = load_ctr_pipeline(tiny_ctr_dirs["id"], device="cpu")
    with pytest.raises(ValueError, match="missing the schema columns"):
        ctr({"user_id": "1"})
