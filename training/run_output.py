"""What a finished training run leaves behind: its record for `results.json` (validation metrics, wall time,
command, hardware), the click probabilities of its test pass (`predictions_test.npz`) and the final, Hub-ready
`output_dir`."""

import dataclasses
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.trainer import TRAINER_STATE_NAME

from processing.atomic_io import atomic_file, write_json

from .arguments import LoraArguments
from .card import CardInfo, example_row
from .hub import push_to_hub, save_for_hub
from .lora import unwrap_lora

RESULTS_NAME = "results.json"


def predictions_name(split: str) -> str:
    return f"predictions_{split}.npz"


def save_predictions(folder: str, split: str, labels: np.ndarray, probs: np.ndarray) -> str:
    """`folder/predictions_<split>.npz`, written atomically: `labels` (N,) as uint8 and the click probabilities
    `probs` (N,) as float32, in the split's row order, so that slices of the split, paired significance tests and
    plots need no second pass over the model. Returns its path."""
    path = os.path.join(folder, predictions_name(split))
    labels = np.asarray(labels).reshape(-1).astype(np.uint8)
    with atomic_file(path) as tmp_path:
        np.savez_compressed(tmp_path, labels=labels, probs=np.asarray(probs, dtype=np.float32).reshape(-1))
    return path


def hardware_description() -> str:
    """e.g. `"1x NVIDIA H100 80GB HBM3"` or `"CPU x86_64, 2 cores, AMX"` (the CPU's native bf16 unit, if any)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    unit = cpu_bf16_unit()
    return f"CPU {platform.machine()}, {os.cpu_count()} cores" + (f", {unit}" if unit else "")


def cpu_bf16_unit(cpuinfo: str | None = None) -> str:
    """The CPU's native bf16 unit by the flags of `cpuinfo` (default: /proc/cpuinfo): "AMX", "AVX512-BF16", or ""
    for none. The same bf16 FLIP pretraining ran ~3x faster per step on a 2-core AMX Xeon than on a 2-core
    AVX512-BF16 EPYC, so run records and benchmarks name the unit beside their times."""
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text() if os.path.isfile("/proc/cpuinfo") else ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command that reproduces this run: `prog` (e.g. `python -m training.finetune`) plus its arguments."""
    return f"{prog} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()


def saved_model_validation(trainer, ignore_keys: list[str] | None = None) -> dict[str, float]:
    """Validation metrics of the model the run saves, read from the log history (no extra pass): the best
    evaluation's when the Trainer reloads the best model at the end, else the last one's (the Trainer tracks a best
    step by the validation loss even when it keeps the last model, as pretraining does)."""
    step = trainer.state.best_global_step if trainer.args.load_best_model_at_end else None
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and (not step or entry.get("step") == step):
            return {key: value for key, value in entry.items() if key.startswith("eval_")}
    return trainer.evaluate(ignore_keys=ignore_keys)


def run_record(start_time: float, trainer, prog: str, argv: list[str] | None) -> dict[str, Any]:
    """Wall time, training rows seen, whether the planned schedule was completed (False after a time or epoch
    budget or early stopping), command, hardware and process count of this run, for `results.json`."""
    args = trainer.args
    global_batch = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * trainer.accelerator.num_processes
    )
    return {
        "wall_time_s": round(time.time() - start_time, 1),
        "train_steps": trainer.state.global_step,
        "train_rows_seen": trainer.state.global_step * global_batch,
        "epoch": trainer.state.epoch,
        "schedule_completed": trainer.state.global_step >= trainer.state.max_steps,
        "command": command_line(prog, argv),
        "hardware": hardware_description(),
        "num_processes": trainer.accelerator.num_processes,
        "output_dir": trainer.args.output_dir,
    }


def save_run(trainer, processor, lora_args: LoraArguments, card: CardInfo, results: dict[str, Any]) -> nn.Module:
    """Write the final, Hub-ready `output_dir` (plain or LoRA-merged model, processor, code files,
    `training_curves.png`, README.md embedding the PNGs, `results.json`, `trainer_state.json` with the loss
    history, also when no checkpoint was saved), push it when `--push_to_hub`, and return the plain model."""
    args = trainer.args
    model = trainer.model
    card.training_command, card.hardware = results["command"], results["hardware"]
    card.wall_time = f"{results['wall_time_s']} s"
    card.repo_id = args.hub_model_id or card.repo_id
    card.example_row = card.example_row or example_row(processor.schema, trainer.train_dataset)
    if trainer.is_world_process_zero():
        from .plots import TRAINING_CURVES_NAME, plot_training_curves  # matplotlib only when saving

        model = unwrap_lora(model, lora_args, args.output_dir)
        plot_training_curves(trainer.state.log_history, os.path.join(args.output_dir, TRAINING_CURVES_NAME))
        save_for_hub(model, processor, args.output_dir, card)
        write_json(os.path.join(args.output_dir, RESULTS_NAME), results)
        write_json(os.path.join(args.output_dir, TRAINER_STATE_NAME), dataclasses.asdict(trainer.state))
        if args.push_final_to_hub:
            push_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, private=bool(args.hub_private_repo))
        print(run_summary(results))
    trainer.accelerator.wait_for_everyone()
    return model


# Loss components as the console names them; a joint model's training loss is the sum of its three BCE terms.
LOSS_NAMES = {"icl": "ICL", "mlm": "MLM", "mtm": "MTM", "joint": "joint BCE", "id": "ID BCE", "text": "text BCE"}


def run_summary(results: dict[str, Any]) -> str:
    """The end of a run for the console: what ran, its validation (best checkpoint) and test metrics, each loss
    component by name, and where the model is."""
    stage = results.get("stage", "training")
    mode = f" (ctr_mode={results['ctr_mode']})" if "ctr_mode" in results else ""
    rows = f"{results['train_steps']} steps, {results['train_rows_seen']:,} training rows seen"
    lines = [f"{stage} done{mode}: {rows}, {results['wall_time_s']} s"]
    for split, prefix in (("validation", "eval_"), ("test", "test_")):
        if results.get(split):
            lines.append(f"  {split + ':':<12}{metrics_line(results[split], prefix)}")
    if results.get("ctr_mode") == "joint":
        lines.append("  (joint mode: the training loss is joint BCE + ID BCE + text BCE; LogLoss: the joint model's)")
    lines.append(f"saved to {results['output_dir']} (model, processor, model card README.md, {RESULTS_NAME})")
    return "\n".join(lines)


def metrics_line(metrics: dict[str, float], prefix: str) -> str:
    """`AUC 0.7123  LogLoss 0.6201  ID BCE 0.62 ...` from `eval_*` / `test_*` metrics."""
    labels = {"auc": "AUC", "logloss": "LogLoss", **{f"{name}_loss": label for name, label in LOSS_NAMES.items()}}
    found = [(label, metrics[prefix + key]) for key, label in labels.items() if prefix + key in metrics]
    return "  ".join(f"{label} {value:.4f}" for label, value in found)
