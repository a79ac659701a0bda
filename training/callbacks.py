"""Trainer callbacks of the FLIP scripts: early stopping on the validation metric and a wall-time budget."""

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


def training_callbacks(args: FlipTrainingArguments) -> list[TrainerCallback]:
    """Early stopping on the validation `metric_for_best_model` when `early_stopping_patience > 0`; the
    `max_train_minutes` time budget."""
    callbacks: list[TrainerCallback] = []
    if args.early_stopping_patience > 0 and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if args.max_train_minutes:
        callbacks.append(TimeBudgetCallback(args.max_train_minutes))
    return callbacks
