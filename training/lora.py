"""LoRA on the text tower (`peft`): wrap a FLIP model before training, save the adapter and merge after."""

import os
import warnings

from torch import nn

from .arguments import LoraArguments
from .trainer import TEXT_TOWER_NAME

# Trainer reads `is_gradient_checkpointing` through the PeftModel, which forwards it to a deprecated peft property:
# expected, and nothing for a user to change.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


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
