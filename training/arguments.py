"""Argument dataclasses of the FLIP scripts, parsed by `HfArgumentParser` from the command line or from a YAML /
JSON config file given as the single positional argument (command-line flags then override the file):

    python -m training.finetune training/configs/finetune_demo.yaml --learning_rate 3e-4 --output_dir out/ft
"""

import argparse
import difflib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field, fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # package data: usable by name from any folder
# `--help` lists these `TrainingArguments` flags and this package's own; `--help_all` lists every accepted flag.
COMMON_TRAINING_FLAGS = {
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "max_grad_norm", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit",
    "logging_steps", "load_best_model_at_end", "metric_for_best_model", "seed", "bf16", "use_cpu", "report_to",
    "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_private_repo", "dataloader_num_workers",
    "gradient_checkpointing", "torch_compile", "disable_tqdm", "train_sampling_strategy",
}  # fmt: skip
# Model / data flags that only one stage reads: the other stage's `--help` leaves them out.
PRETRAINING_ONLY = {
    "projection_dim", "temperature", "learn_temperature", "use_icl", "use_mlm", "use_mtm", "icl_weight", "mlm_weight",
    "mtm_weight", "mtm_loss", "nce_num_noise", "mlm_field_ratio", "mtm_field_ratio", "mask_same_fields",
}  # fmt: skip
FINETUNING_ONLY = {"init_tabular_from", "ctr_mode", "joint_alpha_init", "embedding_l2"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` keeps the module docstring's line breaks (launch commands) and shows every default."""


@dataclass
class ModelArguments:
    """Which model to build.

    `text_model` names the PLM (`"minilm"` = the bundled all-MiniLM-L6-v2, any Hub id or local path). `init_from`
    is a FLIP pretraining checkpoint to start from; without it the model is built from scratch (ID-only baselines
    with `ctr_mode="id"`, PLM-only with `ctr_mode="text"`). `init_tabular_from` then swaps in the tabular tower of
    another (finetuned) checkpoint. Every `FlipConfig` override defaults to `None` =
    keep the value of the checkpoint / of `FlipConfig`.
    """

    text_model: str = field(default="minilm", metadata={"help": "PLM: 'minilm' (bundled), a Hub id or a local path."})
    init_from: str | None = field(
        default=None, metadata={"help": "FLIP pretraining checkpoint to finetune (or to continue pretraining) from."}
    )
    init_tabular_from: str | None = field(
        default=None,
        metadata={
            "help": "A finetuned FLIP_ID / ID-only checkpoint whose tabular tower (embeddings, backbone, ID logit) "
            "replaces the one of --init_from, e.g. a joint model from two separately finetuned towers."
        },
    )
    backbone: str | None = field(default=None, metadata={"help": "ID backbone: dcnv2, deepfm or autoint."})
    ctr_mode: str | None = field(default=None, metadata={"help": "Finetuning variant: id, text or joint."})
    joint_alpha_init: float | None = field(
        default=None, metadata={"help": "Joint mode: initial weight alpha of the ID logit (0 = the reference's)."}
    )
    embedding_dim: int | None = field(default=None, metadata={"help": "Field embedding size E."})
    projection_dim: int | None = field(default=None, metadata={"help": "Common space size P of the ICL loss."})
    temperature: float | None = field(default=None, metadata={"help": "Initial InfoNCE temperature."})
    learn_temperature: bool | None = field(default=None, metadata={"help": "Learn the temperature."})
    text_pooling: str | None = field(default=None, metadata={"help": "Text representation: cls or mean."})
    use_icl: bool | None = field(default=None, metadata={"help": "Pretrain with the contrastive (ICL) loss."})
    use_mlm: bool | None = field(default=None, metadata={"help": "Pretrain with the MLM loss."})
    use_mtm: bool | None = field(default=None, metadata={"help": "Pretrain with the MTM loss."})
    icl_weight: float | None = field(default=None, metadata={"help": "Weight of the ICL loss."})
    mlm_weight: float | None = field(default=None, metadata={"help": "Weight of the MLM loss."})
    mtm_weight: float | None = field(default=None, metadata={"help": "Weight of the MTM loss."})
    mtm_loss: str | None = field(default=None, metadata={"help": "MTM objective: nce, sampled_softmax or softmax."})
    nce_num_noise: int | None = field(default=None, metadata={"help": "Noise ids per masked field (nce)."})
    backbone_dropout: float | None = field(default=None, metadata={"help": "Dropout inside the backbone MLP."})
    embedding_l2: float | None = field(
        default=None,
        metadata={
            "help": "CTR finetuning: L2 penalty lambda * (|E|^2 + |E_linear|^2) on the ID embedding and first-order "
            "tables, added to each training batch's mean BCE (not AdamW weight decay)."
        },
    )

    def config_overrides(self) -> dict[str, Any]:
        """The `FlipConfig` fields set on the command line / in the config file (non-`None`)."""
        skip = {"text_model", "init_from", "init_tabular_from"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {name: value for name, value in values.items() if value is not None}


@dataclass
class DataArguments:
    """Which data and how it becomes batches.

    `dataset` is a recipe name of `processing` (`movielens-100k`, `movielens-1m`, ...) or a folder written by
    `flip prepare` / `processing.prepare`. `max_train_samples` / `max_eval_samples` bound the budget (first rows
    of the time-ordered split).
    """

    dataset: str = field(default="movielens-100k", metadata={"help": "Dataset recipe name or prepared folder."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Where prepared datasets are cached (default: the recipe's cache)."}
    )
    max_length: int = field(default=128, metadata={"help": "Prompt truncation length in tokens (padding is dynamic)."})
    prompt_hidden_fields: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Fields left out of the prompt text (the ID model still reads them), e.g. `user_id movie_id "
            "zip_code`: the contrastive task can then not be solved by matching ID digits in both views. A named "
            "deviation from the reference prompt (which writes every field)."
        },
    )
    mlm_field_ratio: float = field(default=0.15, metadata={"help": "Share of fields whose tokens MLM masks."})
    mtm_field_ratio: float = field(default=0.15, metadata={"help": "Share of fields MTM masks."})
    mask_same_fields: bool = field(default=False, metadata={"help": "MLM and MTM mask the same fields."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Use only the first N test rows."})
    split: str = field(
        default="time",
        metadata={"help": "Split when preparing: time (80/10/10 in time order) or random (seeded 80/10/10 of rows)."},
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of --split random."})
    train_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Train on this fraction of the train rows (label efficiency): a random subset drawn with "
            "--train_subset_seed (the same rows for every model given the same seed), or the oldest rows "
            "(--train_subset oldest)."
        },
    )
    train_subset: str = field(default="random", metadata={"help": "--train_fraction rows: random or oldest."})
    train_subset_seed: int = field(default=0, metadata={"help": "Seed of the --train_fraction random subset."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for `Dataset.map` when preparing."})
    num_buckets: list[str] | None = field(
        default=None,
        metadata={
            "help": "FIELD=N ...: hash these fields into N buckets when preparing the data (bounded embedding tables "
            "for fields with millions of values); the prepared folder name records them."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the train split as a streaming IterableDataset (shuffled through a buffer, never loaded "
            "whole); needs --max_steps."
        },
    )
    shuffle_buffer_size: int = field(default=10_000, metadata={"help": "Rows in the --streaming shuffle buffer."})


@dataclass
class LoraArguments:
    """Optional LoRA on the text tower only; the tabular model, projections and heads stay fully trained
    (`modules_to_save`, which doubles their memory: the embedding tables are copied)."""

    use_lora: bool = field(default=False, metadata={"help": "Wrap the text tower with LoRA adapters (peft)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(
        default=r".*text_model\..*\.(query|value|q_proj|v_proj)",
        metadata={"help": "Regex (full match) of the text-tower linear layers that get adapters."},
    )
    merge_lora: bool = field(
        default=True, metadata={"help": "Save merged weights as the final model (adapter saved under adapter/)."}
    )


@dataclass
class FlipTrainingArguments(TrainingArguments):
    """`TrainingArguments` for CTR finetuning, with these defaults changed:

    `output_dir="outputs/flip-ctr"`, `report_to="none"`, `remove_unused_columns=False` (the collator needs every
    column), `eval_strategy="epoch"`, `save_strategy="epoch"`, `save_total_limit=2`, `load_best_model_at_end=True`,
    `metric_for_best_model="auc"` (validation AUC; the test split is evaluated once, at the end), and the
    reference's FLIP_ID recipe: `learning_rate=1e-3` constant (`lr_scheduler_type="constant"`),
    `per_device_train_batch_size=1024`, no gradient clipping (`max_grad_norm=0`), `logging_steps=50`,
    `ddp_find_unused_parameters=False` (every trainable parameter gets a gradient: `freeze_unused_parameters`),
    `restore_callback_states_from_checkpoint=True` (a resumed run continues the early-stopping patience count of the
    run it resumes, so that a killed and resumed finetuning stops where an uninterrupted one does).
    New fields: `text_learning_rate` (separate PLM learning rate), `embedding_learning_rate` (separate learning rate
    of the ID tables), `early_stopping_patience` (0 = off),
    `max_train_minutes` (time budget: training stops, evaluates and saves once it is spent),
    `stop_after_epochs` (end this run after N epochs with the schedule of the whole run, to resume later),
    `save_on_signal` (on SIGTERM / SIGUSR1: checkpoint at the current step, then exit 128 + signal; on by default),
    `log_tabular_gradients` (per-loss gradient norms into the tabular tower, see `FlipTrainer`).
    `push_to_hub=True` does NOT go to `Trainer` (which would create the repo in `__init__` and overwrite the card):
    it is moved to `push_final_to_hub` and the script publishes the final folder with `training.hub` instead.
    """

    output_dir: str | None = field(default="outputs/flip-ctr", metadata={"help": "Where checkpoints and results go."})
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "Trackers, e.g. tensorboard (pip install 'flip-ctr[tensorboard]')."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep columns for the FLIP collators."})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "Evaluate every epoch."})
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "Checkpoint every epoch."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the best and the latest checkpoints."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Reload the best validation checkpoint."})
    metric_for_best_model: str | None = field(default="auc", metadata={"help": "Validation metric to select on."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate (non-PLM parameters)."})
    lr_scheduler_type: SchedulerType | str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm (0 = none, the reference)."})
    per_device_train_batch_size: int = field(default=1024, metadata={"help": "Train batch size per device."})
    per_device_eval_batch_size: int = field(default=1024, metadata={"help": "Eval batch size per device."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N steps."})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP: search for unused parameters (off: the models freeze what no loss reaches)."},
    )
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={"help": "On resume, restore the early-stopping patience count saved in the checkpoint."},
    )
    text_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the text tower (default: learning_rate)."}
    )
    embedding_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the ID tables (embedding and first-order tables of the tabular tower; default: "
            "learning_rate). A lower one keeps more of a pretrained tower's embeddings in finetuning."
        },
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after N evaluations without improvement of the best metric (0 = off)."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop training after this wall time (bounded budgets); the schedule still follows max_steps."
        },
    )
    save_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or SIGUSR1 (a scheduler's end), save a checkpoint at the current step and exit with "
            "128 + the signal number, to continue with --resume_from_checkpoint; a second signal acts as before."
        },
    )
    stop_after_epochs: float | None = field(
        default=None,
        metadata={
            "help": "End this run after N epochs (saving as usual) while the schedule spans num_train_epochs: a long "
            "run cut into segments (sessions, preemptible machines), continued with --resume_from_checkpoint."
        },
    )
    log_tabular_gradients: bool = field(
        default=True,
        metadata={"help": "Log each loss's gradient norm into the tabular tower and the ID-embedding norm."},
    )

    def __post_init__(self):
        self.push_final_to_hub, self.push_to_hub = self.push_to_hub, False
        if self.push_final_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. my-user/flip-movielens-100k)")
        super().__post_init__()
        require_trackers(self.report_to)
        if self.use_cpu or not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinned memory only helps copies to an accelerator
            if self.bf16:
                warn_if_cpu_bf16_is_emulated()
        warn_if_one_process_of_several(self.world_size)

    def checkpoint_to_resume(self) -> str | bool | None:
        """`--resume_from_checkpoint` for `Trainer.train`: a checkpoint path, or `True` for `true`/`last` (the last
        complete checkpoint in `output_dir`)."""
        value = self.resume_from_checkpoint
        return True if isinstance(value, str) and value.lower() in ("true", "last") else value


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN finds bf16 instructions (AVX512-BF16 / AMX) on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_cpu_bf16_is_emulated() -> None:
    """Warn when `--bf16` runs on a CPU without native bf16: autocast is emulated there, measured 8x slower than
    fp32 on an AVX2 EPYC (benchmarks/RESULTS.md)."""
    if not cpu_has_native_bf16():
        warnings.warn(
            f"--bf16 on a CPU without native bf16 (torch CPU capability {torch.backends.cpu.get_cpu_capability()}): "
            "autocast is emulated and several times slower than fp32 here; drop --bf16 on this machine (it pays on "
            "CPUs with AVX512-BF16 or AMX)",
            stacklevel=2,
        )


def warn_if_one_process_of_several(world_size: int) -> None:
    """Warn when `accelerate launch --cpu --num_processes N` (N > 1) started a single process: accelerate's simple
    launcher ignores N on CPU without an MPI hostfile (the parent's command line, read on Linux, says N)."""
    cmdline = Path(f"/proc/{os.getppid()}/cmdline")
    if world_size > 1 or not os.environ.get("ACCELERATE_USE_CPU") or not cmdline.is_file():
        return
    words = cmdline.read_bytes().decode(errors="replace").split("\0")
    asked = [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("--num_processes", "--num-processes")]
    if asked and asked[0].isdigit() and int(asked[0]) > 1:
        warnings.warn(
            f"accelerate launch asked for {asked[0]} processes on CPU but this run has 1: on CPU use "
            f"`accelerate launch --multi_gpu --num_processes {asked[0]} ...` (gloo; --cpu without an MPI hostfile "
            "starts a single process)",
            stacklevel=2,
        )


def require_trackers(report_to: list[str] | str | None) -> None:
    """Fail early, saying what to install, when `--report_to tensorboard` cannot work (Trainer would only fail
    once the model and data are loaded)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "tensorboard" in names and not (find_spec("tensorboard") or find_spec("tensorboardX")):
        raise ImportError(
            "--report_to tensorboard needs the tensorboard package: pip install 'flip-ctr[tensorboard]' "
            "(or pip install tensorboard), or drop --report_to / use --report_to none"
        )


@dataclass
class FlipPretrainingArguments(FlipTrainingArguments):
    """`FlipTrainingArguments` for FLIP pretraining with the reference recipe: AdamW lr 1e-4 for every parameter,
    weight decay 1e-3, cosine schedule without warm-up, no gradient clipping, batch 128 per device; the final model
    is the last step's (`load_best_model_at_end=False`, as the reference keeps its last epoch), no early stopping,
    `output_dir="outputs/flip-pretrain"`."""

    output_dir: str | None = field(default="outputs/flip-pretrain", metadata={"help": "Where checkpoints go."})
    metric_for_best_model: str | None = field(default="loss", metadata={"help": "Validation metric to select on."})
    load_best_model_at_end: bool = field(default=False, metadata={"help": "Keep the last step's model (reference)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate."})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(
        default=0, metadata={"help": "Warm-up steps (or ratio if < 1); the reference has none."}
    )
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Train batch size per device."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Eval batch size per device."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Early stopping patience (0 = off)."})


def config_to_argv(config: dict[str, Any]) -> list[str]:
    """`{"lr": 1e-3, "label_names": ["labels"]}` -> `["--lr", "0.001", "--label_names", "labels"]`."""
    argv = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = json.dumps(value)
        values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        argv += [f"--{key}", *values]
    return argv


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON config file into a flat dict of argument values."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise TypeError(f"{path}: a config file must hold a mapping of argument names to values, got {config!r}")
    return config


def resolve_config_file(name: str) -> str:
    """`name` when it is a file, else the shipped config of that file name (`pretrain_demo.yaml`, `pretrain_demo` or
    `training/configs/pretrain_demo.yaml`): the configs are package data, usable from any folder."""
    if os.path.isfile(name):
        return name
    for candidate in (Path(name).name, f"{Path(name).name}.yaml"):
        if (SHIPPED_CONFIGS / candidate).is_file():
            return str(SHIPPED_CONFIGS / candidate)
    shipped = ", ".join(sorted(path.stem for path in SHIPPED_CONFIGS.glob("*.yaml")))
    raise FileNotFoundError(f"config file {name!r} does not exist (shipped configs, usable by name: {shipped})")


def check_config_keys(parser: HfArgumentParser, config: dict[str, Any], path: str) -> None:
    """`ValueError` naming the file and each key that is no flag of the command (with the closest flag)."""
    known = {action.dest for action in parser._actions}
    problems = []
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if problems:
        raise ValueError(f"{path}: unknown key {', '.join(problems)}; `{parser.prog} --help_all` lists every flag")


def make_parser(
    dataclass_types: tuple[type, ...], prog: str, description: str | None, hidden: set[str] = frozenset()
) -> HfArgumentParser:
    """An `HfArgumentParser` over `dataclass_types` whose usage line shows the optional config file. `--help` lists
    the common `TrainingArguments` flags and this package's own, minus `hidden` (flags of the other stage);
    `--help_all` lists every flag (all are accepted either way)."""
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=HelpFormatter)
    parser.usage = f"{prog} [CONFIG_FILE[.yaml|.json]] [--flag value ...]"
    parser.epilog = "Only the common flags are listed: `--help_all` lists every TrainingArguments flag."
    ours = {f.name for f in fields(FlipPretrainingArguments)} - {f.name for f in fields(TrainingArguments)}
    for action in parser._actions:
        trainer_only = action.dest in {f.name for f in fields(TrainingArguments)} - COMMON_TRAINING_FLAGS - ours
        if action.dest in hidden or trainer_only:
            action.full_help, action.help = action.help, argparse.SUPPRESS
    return parser


def parse_args(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple:
    """Parse `[CONFIG_FILE] [--flag value ...]` into the parser's dataclasses (flags override the file). The config
    file is a path or the name of a shipped config (`resolve_config_file`); its keys must be flags of the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help_all" in argv:
        for action in parser._actions:
            action.help = getattr(action, "full_help", action.help)
        argv = ["--help"]
    if argv and not argv[0].startswith("-"):
        path = resolve_config_file(argv[0])
        config = load_config_file(path)
        check_config_keys(parser, config, path)
        argv = config_to_argv(config) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def command_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A plain `argparse` parser for the small commands (evaluate, predict, push, demo), same help format."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
