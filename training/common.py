"""Helpers shared by the FLIP scripts: model construction, LoRA, scoring loops, run metadata, atomic writes."""

import dataclasses
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, EarlyStoppingCallback, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME

from modeling_flip import FlipConfig, FlipForCTR

from .arguments import FlipTrainingArguments, LoraArguments
from .hub import CardInfo, push_to_hub, save_for_hub
from .trainer import TEXT_TOWER_NAME

RESULTS_NAME = "results.json"


def write_json(path: str, data: Any) -> None:
    """Write `data` as indented JSON atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(handle.name, path)


def hardware_description() -> str:
    """e.g. `"1x NVIDIA H100 80GB HBM3"` or `"CPU x86_64, 2 cores"`."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command that reproduces this run: `prog` (e.g. `python -m training.finetune`) plus its arguments."""
    return f"{prog} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()


def resume_checkpoint(args: FlipTrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint`: a checkpoint path, or `true`/`last` for the last complete one in `output_dir`."""
    value = args.resume_from_checkpoint
    return True if isinstance(value, str) and value.lower() in ("true", "last") else value


class TimeBudgetCallback(TrainerCallback):
    """Stop training once `minutes` of training wall time are spent; evaluate and save at that step (when the
    strategies do), so the best-model logic sees the last state."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.start >= self.seconds:
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = args.save_strategy != "no"
        return control


def training_callbacks(args: FlipTrainingArguments) -> list[TrainerCallback]:
    """Early stopping on the validation `metric_for_best_model` when `early_stopping_patience > 0`; the
    `max_train_minutes` time budget."""
    callbacks: list[TrainerCallback] = []
    if args.early_stopping_patience > 0 and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if args.max_train_minutes:
        callbacks.append(TimeBudgetCallback(args.max_train_minutes))
    return callbacks


def _trainable_non_text_modules(module: nn.Module, prefix: str = "") -> list[str]:
    """Dotted names of the largest submodules that hold no part of the text tower and have trainable parameters
    (the model freezes what no loss reaches, e.g. the text projection during finetuning)."""
    names = []
    for name, child in module.named_children():
        if name == TEXT_TOWER_NAME:
            continue
        if any(sub_name.split(".")[-1] == TEXT_TOWER_NAME for sub_name, _ in child.named_modules()):
            names += _trainable_non_text_modules(child, f"{prefix}{name}.")
        elif any(param.requires_grad for param in child.parameters()):
            names.append(f"{prefix}{name}")
    return names


def apply_lora(model: nn.Module, lora_args: LoraArguments) -> nn.Module:
    """Wrap `model` with LoRA adapters on the text tower (`lora_target_modules`); the other trainable modules are
    fully trained and saved with the adapter (`modules_to_save`), trainable loose parameters (e.g. the joint
    `alpha`) stay trainable (they are saved in the merged model, not in the adapter)."""
    from peft import LoraConfig, get_peft_model

    if getattr(model, "flip", model).text_model is None:
        raise ValueError("--use_lora needs a text tower: ctr_mode='id' builds none")
    loose = [name for name, param in model.named_parameters(recurse=False) if param.requires_grad]
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=lora_args.lora_target_modules,
        modules_to_save=_trainable_non_text_modules(model),
    )
    peft_model = get_peft_model(model, config)
    for name in loose:
        getattr(model, name).requires_grad_(True)
    peft_model.print_trainable_parameters()
    return peft_model


def unwrap_lora(model: nn.Module, lora_args: LoraArguments, output_dir: str) -> nn.Module:
    """Save the adapter under `output_dir/adapter` and return the plain model: merged (`merge_lora`) or the base
    model with the adapter still attached. Models without LoRA are returned unchanged."""
    if not lora_args.use_lora:
        return model
    model.save_pretrained(os.path.join(output_dir, "adapter"))
    return model.merge_and_unload() if lora_args.merge_lora else model


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset,
    collator,
    batch_size: int,
    description: str = "scoring",
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Click logits (N,) of `model` over `dataset` (rows of processor output), batched, with a progress bar
    (`progress=False`: none, e.g. inside a caller's own bar)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, shuffle=False)
    outputs = []
    for batch in tqdm(loader, desc=description, unit="batch", disable=not progress):
        batch = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        outputs.append(model(**batch).logits.float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros(0, dtype=np.float32)


def best_validation_metrics(trainer, ignore_keys: list[str] | None = None) -> dict[str, float]:
    """Validation metrics of the best (else the last) evaluation, read from the log history: no extra pass."""
    step = trainer.state.best_global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and (not step or entry.get("step") == step):
            return {key: value for key, value in entry.items() if key.startswith("eval_")}
    return trainer.evaluate(ignore_keys=ignore_keys)


def build_model(model_class, model_args, schema, text_model_path: str) -> nn.Module:
    """A `FlipForPretraining` / `FlipForCTR` for `schema`: from `model_args.init_from` (a FLIP checkpoint, with the
    config overrides, e.g. `ctr_mode`), else new around the pretrained PLM, else (`ctr_mode="id"`) without any
    text tower (ID-only baselines: the PLM's config is kept, its weights are never loaded)."""
    overrides = model_args.config_overrides()
    schema_kwargs = {"field_names": schema.field_names, "field_vocab_sizes": schema.field_vocab_sizes}
    if model_args.init_from:
        model = model_class.from_pretrained(model_args.init_from, dtype=torch.float32, **overrides)
        schema.check_compatible(model.config)
    elif overrides.get("ctr_mode") == "id":
        config = FlipConfig(text_config=AutoConfig.from_pretrained(text_model_path), **schema_kwargs, **overrides)
        model = model_class(config)
    else:
        model = model_class.from_text_pretrained(
            text_model_path, text_model_kwargs={"dtype": torch.float32}, **schema_kwargs, **overrides
        )
    if model_args.init_tabular_from:
        load_tabular_tower(model, model_args.init_tabular_from, schema)
    return model


def load_tabular_tower(model: nn.Module, checkpoint: str, schema) -> None:
    """Copy the tabular tower (field embeddings, backbone, ID logit) of the FLIP checkpoint `checkpoint` into `model`
    (e.g. a FLIP_ID finetuning into a joint model whose text tower comes from a FLIP_PLM finetuning). The
    checkpoint must match the data schema and `model`'s tower (backbone and sizes); `ValueError` otherwise."""
    source = FlipForCTR.from_pretrained(checkpoint, ctr_mode="id", dtype=torch.float32)
    schema.check_compatible(source.config)
    try:
        model.flip.tabular_model.load_state_dict(source.flip.tabular_model.state_dict())
    except RuntimeError as error:
        raise ValueError(
            f"The tabular tower of {checkpoint!r} (backbone {source.config.backbone!r}) does not fit the model's "
            f"(backbone {model.config.backbone!r}): {error}"
        ) from error


def save_run(trainer, processor, lora_args: LoraArguments, card: CardInfo, results: dict[str, Any]) -> nn.Module:
    """Write the final, Hub-ready `output_dir` (plain or LoRA-merged model, processor, code files,
    `training_curves.png`, README.md embedding the PNGs, `results.json`, `trainer_state.json` with the loss
    history, also when no checkpoint was saved), push it when `--push_to_hub`, and return the plain model."""
    args = trainer.args
    model = trainer.model
    card.training_command, card.hardware = results["command"], results["hardware"]
    card.wall_time = f"{results['wall_time_s']} s"
    card.repo_id = args.hub_model_id or card.repo_id
    if trainer.is_world_process_zero():
        from .plots import TRAINING_CURVES_NAME, plot_training_curves  # matplotlib only when saving

        model = unwrap_lora(model, lora_args, args.output_dir)
        plot_training_curves(trainer.state.log_history, os.path.join(args.output_dir, TRAINING_CURVES_NAME))
        save_for_hub(model, processor, args.output_dir, card)
        write_json(os.path.join(args.output_dir, RESULTS_NAME), results)
        write_json(os.path.join(args.output_dir, TRAINER_STATE_NAME), dataclasses.asdict(trainer.state))
        if args.push_final_to_hub:
            push_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, private=bool(args.hub_private_repo))
    trainer.accelerator.wait_for_everyone()
    return model


def run_record(start_time: float, trainer, prog: str, argv: list[str] | None) -> dict[str, Any]:
    """Wall time, training rows seen, command, hardware and process count of this run, for `results.json`."""
    args = trainer.args
    global_batch = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * trainer.accelerator.num_processes
    )
    return {
        "wall_time_s": round(time.time() - start_time, 1),
        "train_steps": trainer.state.global_step,
        "train_rows_seen": trainer.state.global_step * global_batch,
        "command": command_line(prog, argv),
        "hardware": hardware_description(),
        "num_processes": trainer.accelerator.num_processes,
        "output_dir": trainer.args.output_dir,
    }
