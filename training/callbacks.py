"""Trainer callbacks of the FLIP scripts: early stopping on the validation metric, a wall-time budget, an epoch
budget for a run cut into segments, and a checkpoint on SIGTERM / SIGUSR1 before the run ends."""

import signal
import sys
import threading
import time

import torch
import torch.distributed as dist
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
        if any_process(time.time() - self.start >= self.seconds, args.device, state.global_step):
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


def is_epoch_end(epoch: float) -> bool:
    """Whether `TrainerState.epoch` marks the end of an epoch (a whole number, up to float error), not a step inside
    one."""
    return abs(epoch - round(epoch)) < 1e-6


class SaveOnSignalCallback(TrainerCallback):
    """End the run like a kill, but with a fresh checkpoint: on SIGTERM or SIGUSR1 (a scheduler's or a session's
    end; SLURM's `--signal`), finish the current step, save a checkpoint there and exit with status 128 + the
    signal's number, without the script's final evaluation or outputs, so that nothing reads a cut run as a finished
    one; `--resume_from_checkpoint` continues it. A cut inside an epoch is not evaluated (the Trainer would, as at an
    epoch's end): that evaluation would enter the checkpoint, count towards early stopping's patience and could
    become the best model, so the resumed run would differ from an uninterrupted one. The first signal restores the
    previous handlers, so a second one acts as before (e.g. terminates a hung step)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signum: int, frame) -> None:
        self.received = signum
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self.previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.received is not None, args.device, state.global_step):
            self.received = self.received or signal.SIGTERM  # another process got it
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.received is not None and not is_epoch_end(state.epoch):
            control.should_evaluate = False  # the Trainer's epoch-end evaluation: not at a cut inside an epoch
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handlers()
        if self.received is not None:
            print(
                f"training stopped by {signal.Signals(self.received).name} at step {state.global_step}; checkpoint "
                f"in {args.output_dir}: continue with --resume_from_checkpoint true",
                file=sys.stderr,
            )
            raise SystemExit(128 + self.received)


AGREE_EVERY_STEPS = 10


def any_process(flag: bool, device: torch.device, step: int) -> bool:
    """`flag` of any process of a distributed run, so that all stop at the same step: a process that stops alone
    leaves the others waiting in their next collective. The all-reduce (a host sync) runs only every
    `AGREE_EVERY_STEPS` steps, the same steps on every process, to keep it off the hot path; one process: `flag`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    if step % AGREE_EVERY_STEPS:
        return False
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def training_callbacks(args: FlipTrainingArguments) -> list[TrainerCallback]:
    """Early stopping on the validation `metric_for_best_model` when `early_stopping_patience > 0`; the
    `max_train_minutes` time budget; the `stop_after_epochs` segment end; `save_on_signal`."""
    callbacks: list[TrainerCallback] = []
    if args.early_stopping_patience > 0 and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if args.max_train_minutes:
        callbacks.append(TimeBudgetCallback(args.max_train_minutes))
    if args.stop_after_epochs:
        callbacks.append(EpochBudgetCallback(args.stop_after_epochs))
    if args.save_on_signal:
        callbacks.append(SaveOnSignalCallback())
    return callbacks
