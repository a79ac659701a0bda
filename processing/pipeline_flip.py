"""`CtrPredictionPipeline`: raw table rows -> click probabilities with a saved `FlipForCTR` (the `ctr-prediction`
task). Imports only torch, transformers and its relative siblings, so it ships as remote code next to the weights:
a saved FLIP CTR folder names it in `config.json` (`custom_pipelines`) and

    pipeline("ctr-prediction", model=FOLDER_OR_REPO, trust_remote_code=True)

works where the `flip-ctr` package is not installed (with it, `import training.pipeline` registers the task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .collators import DataCollatorForCTR
from .processing_flip import SchemaEncoder, _as_columns, load_schema
from .schema import TabularSchema


def _is_columnar(rows: Mapping) -> bool:
    """A dict of equal-length columns (a batch), as opposed to one row of scalars."""
    return bool(rows) and all(
        isinstance(value, (list, tuple)) or hasattr(value, "__array__") for value in rows.values()
    )


class CtrPredictionPipeline(Pipeline):
    """Click probability of raw rows with a saved `FlipForCTR` (any `ctr_mode`).

    Input: one row (dict of scalars) -> float; a list of rows, a dict of columns or a DataFrame -> list of floats.
    `schema=` replaces the processor for ID models without a tokenizer (see `training.export`).
    """

    _load_processor = None  # optional: exported ID folders have only the schema
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, schema: TabularSchema | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.include_text = self.model.config.ctr_mode != "id"
        schema = schema or getattr(self.processor, "schema", None) or _schema_next_to(self.model)
        if self.include_text and self.processor is None:
            raise ValueError(
                f"{self.model.name_or_path!r} (ctr_mode={self.model.config.ctr_mode!r}) reads text but no "
                "FlipProcessor was found next to it: pass processor=FlipProcessor.from_pretrained(DIR) or use the "
                "folder written by `flip finetune`"
            )
        if schema is None:
            raise ValueError(
                f"no flip_schema.json next to {self.model.name_or_path!r}: pass schema=TabularSchema.load(PATH) or "
                "processor=FlipProcessor.from_pretrained(DIR)"
            )
        schema.check_compatible(self.model.config)  # a processor/schema of other data would index wrong rows
        # ID models only need field ids: the schema encodes them without tokenising the prompt
        self.encoder = self.processor if self.include_text else SchemaEncoder(schema)
        self.collator = DataCollatorForCTR(self.encoder.tokenizer, include_text=self.include_text)

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}

    def __call__(self, inputs: Any, *args, **kwargs):
        if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # DataFrame
            inputs = inputs.to_dict("records")
        elif isinstance(inputs, Mapping) and _is_columnar(inputs):
            columns = _as_columns(inputs)
            inputs = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, row: Mapping[str, Any]) -> dict[str, list]:
        """One row -> its unpadded features (lists); batching happens in `collate`."""
        encoded = self.encoder([row])
        return {key: encoded[key][0] for key in self.model_input_names}

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "field_ids"] if self.include_text else ["field_ids"]

    def collate(self, features: list[dict[str, list]]) -> dict[str, torch.Tensor]:
        """Pad a list of `preprocess` outputs into model inputs (`DataCollatorForCTR`)."""
        return self.collator(features)

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> float:
        return float(torch.sigmoid(model_outputs["logits"].float()).reshape(-1)[0])

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        model_inputs = self.collate([self.preprocess(inputs, **preprocess_params)])
        return self.postprocess(self.forward(model_inputs, **forward_params), **postprocess_params)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """`Pipeline.get_iterator` with the CTR collator for every batch size (the default one pads text only)."""
        rows = (PipelineDataset if isinstance(inputs, Sized) else PipelineIterator)(
            inputs, self.preprocess, preprocess_params
        )
        loader = DataLoader(rows, num_workers=num_workers, batch_size=batch_size, collate_fn=self.collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


def _schema_next_to(model) -> TabularSchema | None:
    """The `flip_schema.json` saved with the model (folder or Hub repo), or None."""
    try:
        return load_schema(model.name_or_path)
    except FileNotFoundError:
        return None
