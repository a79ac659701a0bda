"""The model card of a trained FLIP folder: `model_card.md` rendered with huggingface_hub's `ModelCard`, with
model-index metrics, the folder's plots, and a "How to use" example that scores a real row of the training data."""

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from processing.schema import FIELD_OOV_ID, NUM_RESERVED_IDS, TabularSchema

MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card.md"  # links to the top-level model_card.md
HUB_TEXT_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class CardInfo:
    """What the model card says about one trained model. `metrics` holds test metrics keyed `auc`, `logloss`;
    `ctr_mode="pretraining"` renders the card of a pretraining checkpoint (its `results_table`: validation losses);
    `example_row` is the row the "How to use" code scores (`example_row()`: a real row of the training data)."""

    model_name: str = "flip-ctr"
    dataset: str = "movielens-100k"
    text_model: str = "minilm"
    backbone: str = "dcnv2"
    ctr_mode: str = "joint"
    fields: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    results_table: str = ""
    training_command: str = ""
    hardware: str = ""
    wall_time: str = ""
    repo_id: str = "<user>/<repo>"
    plots: list[str] = field(default_factory=list)  # PNG names in the model folder (training.plots), embedded
    example_row: dict[str, str | None] = field(default_factory=dict)

    @property
    def pretraining(self) -> bool:
        return self.ctr_mode == "pretraining"

    def base_model(self) -> str | None:
        """The PLM's Hub id when it has one (local paths are not valid `base_model` values)."""
        name = HUB_TEXT_MODELS.get(self.text_model, self.text_model)
        return None if os.path.exists(name) or name.count("/") != 1 else name


def render_model_card(info: CardInfo, template_path: str | os.PathLike = MODEL_CARD_TEMPLATE) -> ModelCard:
    """`model_card.md` rendered with `info`; test AUC / LogLoss go into the `model-index` metadata."""
    eval_results = [
        EvalResult(
            task_type="tabular-classification",
            task_name="CTR prediction",
            dataset_type=info.dataset,
            dataset_name=info.dataset,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(float(info.metrics[key]), 4),
        )
        for key, metric_type, metric_name in (("auc", "roc_auc", "AUC"), ("logloss", "log_loss", "LogLoss"))
        if key in info.metrics
    ]
    card_data = ModelCardData(
        model_name=info.model_name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=None if info.pretraining else "tabular-classification",
        tags=[
            "ctr-prediction",
            "flip",
            "recommendation",
            "custom_code",
            *(["pretraining"] if info.pretraining else []),
        ],
        datasets=[info.dataset],
        metrics=None if info.pretraining else ["roc_auc", "log_loss"],
        base_model=info.base_model(),
        eval_results=eval_results or None,
    )
    kwargs: dict[str, Any] = {key: value for key, value in vars(info).items() if key != "metrics"}
    kwargs["pretraining"] = info.pretraining
    kwargs["example_rows"] = python_literal({name: [value] for name, value in info.example_row.items()})
    kwargs["plots"] = "\n\n".join(f"![{name[:-4].replace('_', ' ')}]({name})" for name in info.plots)
    kwargs["fields"] = ", ".join(info.fields) or "see processor_config.json"
    kwargs["results_table"] = info.results_table or "\n".join(
        ["| split | AUC | LogLoss |", "|---|---|---|"]
        + ([f"| test | {info.metrics['auc']:.4f} | {info.metrics['logloss']:.4f} |"] if eval_results else [])
    )
    return ModelCard.from_template(card_data, template_path=str(template_path), **kwargs)


def example_row(schema: TabularSchema, encoded_rows: Iterable[Mapping[str, Any]], limit: int = 1000) -> dict:
    """Raw values of a real row for the card's example: the first of (up to `limit`) encoded rows whose every field
    has a value in the vocabulary, decoded with `schema` (so it scores without OOV); the fields' most frequent train
    values when there is none. Hashed fields keep no vocabulary: they get a placeholder to replace."""
    best = None
    for index, row in enumerate(encoded_rows):
        ids = row["field_ids"]
        if all(spec.num_buckets or ids[f] != FIELD_OOV_ID for f, spec in enumerate(schema.fields)):
            best = ids
            break
        if index + 1 >= limit:
            break
    values = {}
    for f, spec in enumerate(schema.fields):
        if spec.num_buckets:
            values[spec.name] = f"<{spec.name}>"
        elif best is not None:
            values[spec.name] = spec.vocab[best[f] - NUM_RESERVED_IDS]
        else:
            values[spec.name] = spec.vocab[0] if spec.vocab else None
    return values


def losses_table(validation: Mapping[str, float]) -> str:
    """Markdown table of the validation losses of a pretraining run (`eval_icl_loss`, ... and the total)."""
    names = [key for key in validation if key.startswith("eval_") and key.endswith("loss")]
    rows = [f"| {key[len('eval_') :].replace('_', ' ')} | {validation[key]:.4f} |" for key in sorted(names)]
    return "\n".join(["| validation loss | value |", "|---|---|", *rows])


def python_literal(columns: Mapping[str, list[str | None]]) -> str:
    """A dict of string columns as indented Python source in the repository's style, one field per line."""
    lines = [
        f"    {json.dumps(name)}: [{', '.join('None' if v is None else json.dumps(v) for v in values)}],"
        for name, values in columns.items()
    ]
    return "{\n" + "\n".join(lines) + "\n}"
