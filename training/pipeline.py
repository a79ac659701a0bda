"""`ctr-prediction`: a `transformers` pipeline that turns raw table rows into click probabilities.

    import training.pipeline  # registers the task
    from transformers import pipeline

    ctr = pipeline("ctr-prediction", model="outputs/demo/flip")            # folder or Hub repo id
    ctr({"user_id": "196", "gender": "M", "movie_id": "242", "genre": "Comedy"})   # -> 0.61 (one float)
    ctr([row_a, row_b], batch_size=64)                                      # -> [0.61, 0.12]
    ctr(frame)                                                              # pandas DataFrame -> list of floats

or `load_ctr_pipeline(path)`, which also accepts a folder written by `flip export-id` (schema only, no tokenizer).
Preprocessing is the model's `FlipProcessor` (in `ctr_mode="id"` only its schema: no text is tokenised), the
forward pass is `FlipForCTR`, postprocessing `sigmoid(logits)`. For large files use `flip predict`, which streams
the file in chunks through the same processor and model.
"""

from __future__ import annotations

import json
import os

from transformers import AutoModelForSequenceClassification, pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

import processing  # noqa: F401  (registers the FLIP config, models and FlipProcessor with the Auto classes)
from processing.atomic_io import write_json
from processing.pipeline_flip import CtrPredictionPipeline

TASK = "ctr-prediction"
PIPELINE_ENTRY = {  # the `custom_pipelines` entry of config.json: how transformers finds a Hub repo's own pipeline
    "impl": f"{CtrPredictionPipeline.__module__.rsplit('.', 1)[-1]}.{CtrPredictionPipeline.__name__}",
    "pt": ["AutoModelForSequenceClassification"],
    "tf": [],
    "type": "multimodal",
}


# the pipeline class lives in processing/pipeline_flip.py, which ships next to the weights as remote code
PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=CtrPredictionPipeline, pt_model=AutoModelForSequenceClassification, type="multimodal"
)


def load_ctr_pipeline(path: str, device: int | str | None = None, **kwargs) -> CtrPredictionPipeline:
    """`pipeline("ctr-prediction", model=path)` for a FLIP CTR folder, Hub repo id or exported ID folder."""
    return pipeline(TASK, model=path, device=device, trust_remote_code=True, **kwargs)


def ship_pipeline(folder: str | os.PathLike) -> None:
    """Make the saved CTR model in `folder` a `ctr-prediction` pipeline without this package: copy the pipeline's
    code files next to the weights and name the task in `config.json` (`custom_pipelines`)."""
    custom_object_save(CtrPredictionPipeline, folder)
    config_path = os.path.join(folder, "config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    write_json(config_path, {**config, "custom_pipelines": {TASK: PIPELINE_ENTRY}})
