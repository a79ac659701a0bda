"""Full-data FLIP_ID vs DCNv2 on the reference recipe, on a machine without `datasets` / `evaluate` / scikit-learn.

The library's scripts read prepared `datasets` folders; this runner feeds the same library pieces (argument
dataclasses and YAML configs of `training/configs`, `build_model`, `FlipTrainer`, the collators, the time-budget
and early-stopping callbacks) with the rows of a bundle written by `benchmarks/bench_data.py export`:

    python benchmarks/gpu_quality.py --bundle benchmarks/.cache/bundle --output_dir outputs/gpu_quality \
        --pretrain_epochs 10 --pretrain_minutes 5 --finetune_minutes 0.5 --seeds 0,1,2

Rows, quality first: FLIP pretraining of the bundle's PLM (`pretrain_full.yaml`: the reference recipe at its global
batch 1024 on one device, mean pooling, `--pretrain_epochs` epochs, cut by `--pretrain_minutes`), then FLIP_ID
(from that pretraining) and DCNv2 (from scratch) for every seed (`finetune_full.yaml`, id mode: the reference
finetuning recipe, early stopping on validation AUC), then FLIP (joint) and FLIP_PLM from the same pretraining for
every `--text_seeds` seed (the reference text / joint recipe, `TEXT_RECIPE`, cut by `--text_finetune_minutes`).
Test AUC is computed once per row; every record is printed and saved as soon as it exists, so a run cut by its time
limit keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_data import BenchData, load_bundle  # noqa: E402

from modeling_flip import FlipForCTR, FlipForPretraining  # noqa: E402
from processing.atomic_io import write_json  # noqa: E402
from processing.collators import DataCollatorForCTR, DataCollatorForFlipPretraining  # noqa: E402
from training.arguments import (  # noqa: E402
    DataArguments,
    FlipPretrainingArguments,
    FlipTrainingArguments,
    ModelArguments,
    make_parser,
    parse_args,
)
from training.callbacks import training_callbacks  # noqa: E402
from training.model_builder import build_model  # noqa: E402
from training.trainer import FlipTrainer  # noqa: E402

CONFIGS = REPO / "training" / "configs"
PRETRAIN_FLAGS = ["--per_device_train_batch_size", "1024", "--text_pooling", "mean"]  # one device: global 1024
# text / joint modes of `finetune_full.yaml` (its header): AdamW 5e-5 for everything, weight decay 1e-3, batch 128,
# up to 25 epochs; the joint model adds L2 1e-4 on the ID tables
TEXT_RECIPE = ["--learning_rate", "5e-5", "--weight_decay", "1e-3", "--per_device_train_batch_size", "128"]
TEXT_RECIPE += ["--num_train_epochs", "25"]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula with averaged ranks for ties (no scikit-learn)."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    _, inverse, counts = np.unique(
        np.asarray(scores, dtype=np.float64).reshape(-1), return_inverse=True, return_counts=True
    )
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    positives, negatives = labels.sum(), (~labels).sum()
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def compute_metrics(eval_pred) -> dict[str, float]:
    """Trainer hook: validation AUC of the final logits (first prediction)."""
    predictions = eval_pred.predictions
    logits = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    return {"auc": auc(eval_pred.label_ids, logits)}


def parse(
    config: str, training_class: type, data: BenchData, output_dir: str, minutes: float, seed: int, flags: list[str]
) -> tuple:
    """The library's argument dataclasses from a config file, the flags every GPU run shares, then `flags`."""
    parser = make_parser((ModelArguments, DataArguments, training_class), "gpu_quality", None)
    shared = ["--output_dir", output_dir, "--max_train_minutes", str(minutes), "--dataloader_num_workers", "2"]
    shared += ["--seed", str(seed), "--text_model", data.text_model_path]
    return parse_args(parser, [str(CONFIGS / config), *shared, *flags])


def pretrain(data: BenchData, output_dir: str, minutes: float, seed: int, flags: list[str]) -> tuple[str, dict]:
    """FLIP pretraining on the train rows within `minutes`; saves the model to `output_dir`."""
    no_checkpoints = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    model_args, data_args, args = parse(
        "pretrain_full.yaml", FlipPretrainingArguments, data, output_dir, minutes, seed, [*no_checkpoints, *flags]
    )
    args.label_names = []
    model = build_model(FlipForPretraining, model_args, data.processor.schema, data.text_model_path)
    model.set_feature_frequencies(data.processor.schema.feature_counts())
    collator = DataCollatorForFlipPretraining(
        data.processor.tokenizer,
        mlm_field_ratio=data_args.mlm_field_ratio,
        mtm_field_ratio=data_args.mtm_field_ratio,
        seed=seed,
    )
    trainer = FlipTrainer(
        model=model,
        args=args,
        train_dataset=data.splits["train"],
        data_collator=collator,
        callbacks=training_callbacks(args),
    )
    start = time.time()
    output = trainer.train()
    trainer.save_model(output_dir)
    record = {
        "row": "FLIP pretraining",
        "steps": output.global_step,
        "train_loss": output.training_loss,
        "seconds": round(time.time() - start, 1),
        "epochs": round(output.global_step * args.per_device_train_batch_size / len(data.splits["train"]), 2),
    }
    return output_dir, record


def finetune(data: BenchData, row: str, output_dir: str, minutes: float, seed: int, flags: list[str]) -> dict:
    """One CTR row: train with early stopping on validation AUC within `minutes`, then test AUC once."""
    model_args, _, args = parse("finetune_full.yaml", FlipTrainingArguments, data, output_dir, minutes, seed, flags)
    args.label_names = ["labels"]
    model = build_model(FlipForCTR, model_args, data.processor.schema, data.text_model_path)
    collator = DataCollatorForCTR(data.processor.tokenizer, include_text=model.config.ctr_mode != "id")
    trainer = FlipTrainer(
        model=model,
        args=args,
        train_dataset=data.splits["train"],
        eval_dataset=data.splits["validation"],
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=training_callbacks(args),
    )
    start = time.time()
    output = trainer.train()
    prediction = trainer.predict(data.splits["test"])
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    record = {
        "row": row,
        "seed": seed,
        "test_auc": round(auc(prediction.label_ids, logits), 4),
        "steps": output.global_step,
        "seconds": round(time.time() - start, 1),
        "best_validation_auc": trainer.state.best_metric,
    }
    if model.config.ctr_mode == "joint":  # how far the learned mix moved from its init
        record["alpha"] = model.alpha.item()
    return record


def common_flags(args: argparse.Namespace) -> list[str]:
    """Flags appended to every training run: bf16 only on CUDA, optional step / batch caps."""
    import torch

    flags = ["--bf16", str(torch.cuda.is_available()).lower()]
    flags += ["--max_steps", str(args.max_steps)] if args.max_steps else []
    flags += ["--per_device_train_batch_size", str(args.batch_size)] if args.batch_size else []
    return flags


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--output_dir", default="outputs/gpu_quality")
    parser.add_argument("--pretrain_epochs", type=float, default=10)
    parser.add_argument("--pretrain_minutes", type=float, default=5.0, help="wall-time cap of the pretraining")
    parser.add_argument("--finetune_minutes", type=float, default=0.5, help="wall-time cap of each finetuning")
    parser.add_argument("--seeds", default="0,1,2", help="finetuning seeds of FLIP_ID and DCNv2")
    parser.add_argument("--text_seeds", default="0", help="seeds of FLIP (joint) and FLIP_PLM ('' for none)")
    parser.add_argument(
        "--text_finetune_minutes", type=float, default=1.5, help="wall-time cap of each FLIP (joint) / FLIP_PLM run"
    )
    parser.add_argument("--max_rows", type=int, default=None, help="cut every split (smoke tests)")
    parser.add_argument("--max_steps", type=int, default=None, help="cap every training run (smoke tests)")
    parser.add_argument("--batch_size", type=int, default=None, help="override every train batch size (smoke tests)")
    args = parser.parse_args(argv)
    data = load_bundle(args.bundle, splits=("train", "validation", "test"))
    if args.max_rows:
        data.splits = {name: rows[: args.max_rows] for name, rows in data.splits.items()}
    extra = common_flags(args)
    out = Path(args.output_dir)
    records: list[dict[str, Any]] = []

    def keep(record: dict[str, Any]) -> None:  # printed and saved after every row: a cut-off run keeps its rows
        records.append(record)
        print(json.dumps(record), flush=True)
        write_json(out / "quality.json", records)

    pretrain_flags = [*PRETRAIN_FLAGS, "--num_train_epochs", str(args.pretrain_epochs), *extra]
    checkpoint, record = pretrain(data, str(out / "pretrain"), args.pretrain_minutes, 42, pretrain_flags)
    keep(record)
    id_rows = {
        "FLIP_ID": ["--ctr_mode", "id", "--init_from", checkpoint],
        "DCNv2": ["--ctr_mode", "id", "--backbone", "dcnv2"],
    }
    text_rows = {
        "FLIP (joint)": ["--ctr_mode", "joint", "--init_from", checkpoint, *TEXT_RECIPE, "--embedding_l2", "1e-4"],
        "FLIP_PLM": ["--ctr_mode", "text", "--init_from", checkpoint, *TEXT_RECIPE],
    }
    runs = [(id_rows, args.seeds, args.finetune_minutes), (text_rows, args.text_seeds, args.text_finetune_minutes)]
    for rows, seeds, minutes in runs:
        for seed in [int(seed) for seed in seeds.split(",") if seed]:
            for name, flags in rows.items():
                run_dir = str(out / f"{name.lower().replace(' ', '-')}-seed{seed}")
                keep(finetune(data, name, run_dir, minutes, seed, [*flags, *extra]))
    return records


if __name__ == "__main__":
    main()
