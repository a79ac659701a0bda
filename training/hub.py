"""Publishing FLIP models: a self-contained folder (weights, config, processor, code files, model card with
model-index metrics) and an upload through an injectable `HfApi` (tests pass a fake one, nothing goes online).

    flip push outputs/demo/flip my-user/flip-movielens-100k --private
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from modeling_flip import FlipForCTR
from processing.atomic_io import apply_umask

from .arguments import command_parser
from .pipeline import ship_pipeline

MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card.md"  # links to the top-level model_card.md
HUB_TEXT_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}
IGNORE_ON_UPLOAD = ["checkpoint-*", "tmp-checkpoint-*", "runs/*", "*.pt", "*.pth", "training_args.bin"]


@dataclass
class CardInfo:
    """What the model card says about one trained model. `metrics` holds test metrics keyed `auc`, `logloss`."""

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
        pipeline_tag="tabular-classification",
        tags=["ctr-prediction", "flip", "recommendation", "custom_code"],
        datasets=[info.dataset],
        metrics=["roc_auc", "log_loss"],
        base_model=info.base_model(),
        eval_results=eval_results or None,
    )
    kwargs: dict[str, Any] = {key: value for key, value in vars(info).items() if key != "metrics"}
    kwargs["plots"] = "\n\n".join(f"![{name[:-4].replace('_', ' ')}]({name})" for name in info.plots)
    kwargs["fields"] = ", ".join(info.fields) or "see processor_config.json"
    kwargs["results_table"] = info.results_table or "\n".join(
        ["| split | AUC | LogLoss |", "|---|---|---|"]
        + ([f"| test | {info.metrics['auc']:.4f} | {info.metrics['logloss']:.4f} |"] if eval_results else [])
    )
    return ModelCard.from_template(card_data, template_path=str(template_path), **kwargs)


def save_for_hub(model, processor, output_dir: str, card_info: CardInfo) -> str:
    """Write a Hub-ready folder: `save_pretrained` of model (code files included through
    `register_for_auto_class`) and processor, plus `README.md` rendered from `model_card.md`, which embeds the
    evaluation PNGs already in the folder (ROC, calibration, training curves). Returns the folder."""
    model.save_pretrained(output_dir)
    if isinstance(model, FlipForCTR):  # a CTR model is a `ctr-prediction` pipeline, also without this package
        ship_pipeline(output_dir)
    processor.save_pretrained(output_dir)
    card_info.plots = card_info.plots or sorted(name for name in os.listdir(output_dir) if name.endswith(".png"))
    render_model_card(card_info).save(os.path.join(output_dir, "README.md"))
    apply_umask(output_dir)  # safetensors writes model.safetensors 0o600
    return output_dir


def push_to_hub(
    folder: str,
    repo_id: str,
    api: HfApi | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload FLIP model",
):
    """Create `repo_id` if needed and upload `folder` (checkpoints and optimizer states excluded)."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder!r} holds no config.json: pass a folder written by save_for_hub / a script")
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=IGNORE_ON_UPLOAD,
    )


def main(argv: list[str] | None = None, prog: str = "python -m training.hub") -> None:
    """`flip push FOLDER REPO_ID [--private] [--token T]`: upload a folder written by the training scripts."""
    parser = command_parser(prog, __doc__)
    parser.add_argument("folder", help="folder written by finetune / pretrain / save_for_hub")
    parser.add_argument("repo_id", help="Hub repository, e.g. my-user/flip-movielens-100k")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.add_argument("--commit_message", default="Upload FLIP model", help="commit message")
    args = parser.parse_args(argv)
    info = push_to_hub(
        args.folder, args.repo_id, token=args.token, private=args.private, commit_message=args.commit_message
    )
    print(f"pushed {args.folder} to {args.repo_id}: {info}")


if __name__ == "__main__":
    main()
