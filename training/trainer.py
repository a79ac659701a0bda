"""`FlipTrainer`: `transformers.Trainer` plus component-loss logging, a separate PLM learning rate and
atomic checkpoints. Nothing else: model building, data and metrics live in the scripts and `ctr_metrics`."""

import os
import shutil

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from processing.atomic_io import apply_umask

TEXT_TOWER_NAME = "text_model"
ID_TABLE_NAMES = ("tabular_model.embeddings.weight", "tabular_model.linear.weight")  # the L2-penalised ID tables


class FlipTrainer(Trainer):
    """`Trainer` for FLIP pretraining and CTR finetuning.

    - Logs every scalar component of the model output next to `loss` (pretraining: `icl_loss`, `mlm_loss`,
      `mtm_loss`, accuracies; finetuning: `id_loss`, `text_loss`, `joint_loss`, `alpha`). Values are accumulated
      as detached device tensors and turned into Python floats only at logging time (no host sync per step),
      averaged over the logging window and over processes. Evaluations log them with their prefix (`eval_`, `test_`).
    - `args.text_learning_rate` (if set) gives the parameters of the text tower (`text_model`) their own learning
      rate, `args.embedding_learning_rate` (if set) the ID tables (embedding and first-order tables); each is an
      extra optimizer param group, the rest uses `args.learning_rate`.
    - Checkpoints are written under a temporary name and renamed once complete, so an interrupted save never
      leaves a `checkpoint-N` folder that `resume_from_checkpoint` would pick up half-written.
    - Every `logging_steps` steps (when `args.log_tabular_gradients`), the norm of the gradient that each weighted
      loss component sends into the tabular tower (`tabular_grad_norm_<loss>`: ICL / MLM / MTM in pretraining,
      joint / ID / text BCE in finetuning) and the mean L2 norm of the ID-embedding rows (`id_embedding_norm`),
      measured with extra `autograd.grad` passes on that step's graph (the training step itself is unchanged).
    - `train_sampling_strategy="group_by_length"` reads the token counts of a `datasets.Dataset` column-wise
      (one Arrow call, ~0.05 s for ML-100k) instead of the Trainer's per-row access (~15-30 s).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._component_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._component_counts: dict[str, int] = {"train": 0, "eval": 0}
        self._staging_dir: str | None = None
        self._diagnostics: dict[str, torch.Tensor] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        mode = "train" if model.training else "eval"
        sums = self._component_sums[mode]
        for key, value in outputs.items():
            if key != "loss" and isinstance(value, torch.Tensor) and value.dim() == 0:
                value = value.detach().float()
                sums[key] = sums[key] + value if key in sums else value
        self._component_counts[mode] += 1
        if mode == "train" and getattr(self.args, "log_tabular_gradients", False) and self._is_logging_step():
            self._diagnostics = tabular_diagnostics(self.accelerator.unwrap_model(model), outputs)
        return (loss, outputs) if return_outputs else loss

    def _is_logging_step(self) -> bool:
        """True on the steps whose losses end a logging window (`logging_steps` is an int here, steps > 0)."""
        every = self.state.logging_steps or self.args.logging_steps
        return every > 0 and (self.state.global_step + 1) % int(every) == 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        eval_prefix = next((key[: -len("runtime")] for key in logs if key.endswith("_runtime")), None)
        mode = "train" if "loss" in logs else "eval" if eval_prefix and eval_prefix != "train_" else None
        if mode is not None and self._component_counts[mode]:
            sums, count = self._component_sums[mode], self._component_counts[mode]
            names = sorted(sums)  # same order on every process
            if names:
                means = self.accelerator.reduce(torch.stack([sums[name] for name in names]) / count, "mean")
                prefix = "" if mode == "train" else eval_prefix
                logs.update({prefix + name: round(value, 4) for name, value in zip(names, means.tolist())})
            self._component_sums[mode], self._component_counts[mode] = {}, 0
        if mode == "train" and self._diagnostics:
            names = sorted(self._diagnostics)
            values = self.accelerator.reduce(torch.stack([self._diagnostics[name] for name in names]), "mean")
            logs.update({name: float(f"{value:.5g}") for name, value in zip(names, values.tolist())})
            self._diagnostics = {}
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        grouped = getattr(self.args, "train_sampling_strategy", None) == "group_by_length"
        if not (grouped and hasattr(dataset, "with_format") and "input_ids" in dataset.column_names):
            return super()._get_train_sampler(train_dataset)
        import pyarrow.compute as pc  # only with a datasets.Dataset, so pyarrow is installed

        lengths = pc.list_value_length(dataset.with_format("arrow")[:]["input_ids"]).to_pylist()
        batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(batch_size, lengths=lengths)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Default optimizer; with `text_learning_rate` / `embedding_learning_rate`, the text tower's / the ID
        tables' parameters go into groups with that lr."""
        opt_model = self.model if model is None else model
        if self.optimizer is not None or not self.has_own_learning_rates():
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float | None, bool], list[nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups.setdefault((self.own_learning_rate(name), name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decayed else 0.0,
                **({"lr": lr} if lr is not None else {}),
            }
            for (lr, decayed), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def has_own_learning_rates(self) -> bool:
        """Whether some parameters get a learning rate other than `args.learning_rate`."""
        return any(
            getattr(self.args, key, None) is not None for key in ("text_learning_rate", "embedding_learning_rate")
        )

    def own_learning_rate(self, name: str) -> float | None:
        """The learning rate of parameter `name` when it differs from `args.learning_rate` (None: the default)."""
        if TEXT_TOWER_NAME in name.split("."):
            return getattr(self.args, "text_learning_rate", None)
        if name.endswith(ID_TABLE_NAMES):
            return getattr(self.args, "embedding_learning_rate", None)
        return None

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """Save into `<output_dir>/tmp-checkpoint-N/checkpoint-N`, then rename it to `<output_dir>/checkpoint-N`."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root, final = os.path.join(run_dir, f"tmp-{name}"), os.path.join(run_dir, name)
        self._staging_dir = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        staged = os.path.join(staging_root, name)
        moved_best = self.state.best_model_checkpoint == staged  # set by Trainer when this checkpoint is the best
        if moved_best:
            self.state.best_model_checkpoint = final
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if os.path.isdir(final):
                shutil.rmtree(final)
            apply_umask(staged)
            os.replace(staged, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            if moved_best:
                self.state.save_to_json(os.path.join(final, "trainer_state.json"))
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()


def tabular_diagnostics(model: nn.Module, outputs) -> dict[str, torch.Tensor]:
    """`tabular_grad_norm_<name>`: L2 norm of the gradient of `weight * <name>_loss` with respect to the trainable
    tabular-tower parameters (the weight is the config's `<name>_weight`, else 1), for every scalar loss component
    of `outputs` that has a graph; `id_embedding_norm`: mean L2 norm of the rows of the ID-embedding table. The
    step's graph is kept (`retain_graph`) for the real backward pass; nothing is accumulated into `.grad`."""
    tower = model.flip.tabular_model
    params = [param for param in tower.parameters() if param.requires_grad]
    found = {}
    for key, value in outputs.items():
        if not (key.endswith("_loss") and isinstance(value, torch.Tensor) and value.requires_grad and params):
            continue
        weight = getattr(model.config, f"{key[: -len('_loss')]}_weight", 1.0)
        grads = torch.autograd.grad(weight * value, params, retain_graph=True, allow_unused=True)
        squares = [grad.detach().float().pow(2).sum() for grad in grads if grad is not None]
        found[f"tabular_grad_norm_{key[: -len('_loss')]}"] = torch.stack(squares).sum().sqrt() if squares else 0
    norms = tower.embeddings.weight.detach().float().norm(dim=1)
    found["id_embedding_norm"] = norms.mean()
    return {name: torch.as_tensor(value, dtype=torch.float, device=norms.device) for name, value in found.items()}
