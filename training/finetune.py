"""CTR finetuning of FLIP (modes `id` = FLIP_ID, `text` = FLIP_PLM, `joint` = FLIP) and of the baselines.

    # FLIP_ID / FLIP from a pretraining checkpoint
    python -m training.finetune training/configs/finetune_demo.yaml --init_from outputs/pretrain --ctr_mode id
    python -m training.finetune training/configs/finetune_demo.yaml --init_from outputs/pretrain --ctr_mode joint \\
        --learning_rate 5e-5 --per_device_train_batch_size 128
    # baselines from scratch: an ID model (--backbone dcnv2|deepfm|autoint) or the PLM alone
    python -m training.finetune training/configs/finetune_demo.yaml --ctr_mode id --backbone dcnv2
    python -m training.finetune training/configs/finetune_demo.yaml --ctr_mode text --learning_rate 5e-5
    # GPUs / nodes: the same arguments after `accelerate launch [--multi_gpu --num_processes N ...] -m`, e.g.
    accelerate launch --multi_gpu --num_processes 8 -m training.finetune training/configs/finetune_full.yaml \\
        --init_from outputs/pretrain --ctr_mode joint

Early stopping and the best checkpoint use the **validation** AUC; the best model is then evaluated once on the
test split. `output_dir` ends up holding the final model (LoRA merged), processor, code files, README.md (model
card) and `results.json` (validation + test AUC/LogLoss, for a joint model also each tower's AUC alone
(`id_auc`, `text_auc`), wall time, command, hardware), plus `roc_test.png`,
`calibration_test.png`, `training_curves.png` (loss components, validation AUC/LogLoss, joint alpha) and
`predictions_test.npz` (the test labels and click probabilities, in row order).
`--report_to tensorboard` also logs every value to TensorBoard under `output_dir/runs` (`pip install
'flip-ctr[tensorboard]'`).
`--use_lora` adapts only the text tower; `--push_to_hub --hub_model_id user/repo` publishes the folder.
"""

import time
from collections.abc import Callable
from dataclasses import fields
from functools import partial

from transformers import EarlyStoppingCallback, EvalPrediction, set_seed

from modeling_flip import FlipCTROutput, FlipForCTR
from processing.collators import DataCollatorForCTR

from .arguments import (
    PRETRAINING_ONLY,
    DataArguments,
    FlipTrainingArguments,
    LoraArguments,
    ModelArguments,
    make_parser,
    parse_args,
)
from .callbacks import training_callbacks
from .card import CardInfo
from .ctr_metrics import compute_metrics
from .data import check_prompt_matches, dataset_name, load_data
from .lora import apply_lora
from .model_builder import build_model
from .plots import PredictionRecorder, write_evaluation_plots
from .run_output import run_record, save_predictions, save_run, saved_model_validation
from .trainer import FlipTrainer

ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoraArguments, FlipTrainingArguments)
# a joint model's tower logits, in the order of FlipCTROutput's fields (the order of the evaluation's predictions)
TOWER_LOGITS = {"id": "id_logits", "text": "text_logits"}


def ignored_outputs(mode: str) -> list[str]:
    """The model outputs evaluation leaves out of its predictions: all but the final `logits` (the component losses
    are logged by FlipTrainer), except, in joint mode, the towers' logits, whose AUC is logged too (`id_auc`,
    `text_auc`: how far the mix with alpha is from each tower alone)."""
    kept = ("loss", "logits", *(TOWER_LOGITS.values() if mode == "joint" else ()))
    return [field.name for field in fields(FlipCTROutput) if field.name not in kept]


def metrics_for(mode: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for the predictions `ignored_outputs(mode)` leaves."""
    return partial(compute_metrics, tower_names=tuple(TOWER_LOGITS) if mode == "joint" else ())


def main(argv: list[str] | None = None, prog: str = "python -m training.finetune") -> dict:
    """Finetune, evaluate the best validation checkpoint once on test, save the final folder; return results."""
    start = time.time()
    parser = make_parser(ARGUMENT_CLASSES, prog, __doc__, hidden=PRETRAINING_ONLY)
    model_args, data_args, lora_args, args = parse_args(parser, argv)
    args.label_names = ["labels"]
    set_seed(args.seed)
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("--streaming reads the train split as a stream of unknown length: set --max_steps")
    data, processor, text_model_path = load_data(model_args, data_args, seed=args.seed)
    model = build_model(FlipForCTR, model_args, processor.schema, text_model_path)
    mode = model.config.ctr_mode
    if mode != "id":
        check_prompt_matches(model_args.init_from, processor)
    if lora_args.use_lora:
        model = apply_lora(model, lora_args)
    trainer = FlipTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorForCTR(processor.tokenizer, include_text=mode != "id"),
        processing_class=processor,
        compute_metrics=metrics_for(mode),
        callbacks=training_callbacks(args),
    )
    ignored = ignored_outputs(mode)
    trainer.train(resume_from_checkpoint=args.checkpoint_to_resume(), ignore_keys_for_eval=ignored)
    validation = saved_model_validation(trainer, ignored)
    trainer.remove_callback(EarlyStoppingCallback)  # the test pass is not a validation step
    trainer.compute_metrics = test_scores = PredictionRecorder(metrics_for(mode))  # keeps probabilities for plots
    test = trainer.evaluate(data["test"], ignore_keys=ignored, metric_key_prefix="test")
    if trainer.is_world_process_zero():  # roc_test.png, calibration_test.png (the card embeds them)
        write_evaluation_plots(args.output_dir, test_scores.labels, test_scores.probs, "test", log_history=[])
        save_predictions(args.output_dir, "test", test_scores.labels, test_scores.probs)
    config = trainer.model.config
    name = "FLIP" if model_args.init_from else "baseline"
    card = CardInfo(
        model_name=f"{name}-{mode}-{config.backbone}-{dataset_name(data_args)}".lower(),
        dataset=dataset_name(data_args),
        text_model=model_args.text_model,
        backbone=config.backbone,
        ctr_mode=mode,
        fields=processor.schema.field_names,
        metrics={"auc": test["test_auc"], "logloss": test["test_logloss"]},
    )
    results = {
        "stage": "finetuning",
        "ctr_mode": mode,
        "init_from": model_args.init_from,
        "init_tabular_from": model_args.init_tabular_from,
        "validation": validation,
        "test": test,
        "train_rows": None if data_args.streaming else len(data["train"]),
        "test_rows": len(data["test"]),
        **run_record(start, trainer, prog, argv),
    }
    save_run(trainer, processor, lora_args, card, results)
    return results


if __name__ == "__main__":
    main()
