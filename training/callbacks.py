"""Trainer callbacks of the FLIP scripts: early stopping on the validation metric, a wall-time budget and an epoch
budget for a run cut into segments."""

import time

from transformers import EarlyStoppingCallback, TrainerCallback

from .arguments import FlipTrainingArguments


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


class EpochBudgetCallback(TrainerCallback):
    """End training at the end of epoch `epochs` (the epoch's own evaluation and checkpoint happen as usual); the
    learning-rate schedule still spans the whole run, which a later `--resume_from_checkpoint` continues."""

    def __init__(self, epochs: float):
        self.epochs = epochs

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.epochs - 1e-6:
            control.should_training_stop = True
        return control


def training_callbacks(args: FlipTrainingArguments) -> list[TrainerCallback]:
    """Early stopping on the validation `metric_for_best_model` when `early_stopping_patience > 0`; the
    `max_train_minutes` time budget; the `stop_after_epochs` segment end."""
    callbacks: list[TrainerCallback] = []
    if args.early_stopping_patience > 0 and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if args.max_train_minutes:
        callbacks.append(TimeBudgetCallback(args.max_train_minutes))
    if args.stop_after_epochs:
        callbacks.append(EpochBudgetCallback(args.stop_after_epochs))
    return callbacks
