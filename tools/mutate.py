"""Mutation check: plant named single bugs in the model and the masking collator, one at a time, in a temporary
copy of the repository, run the tests that should catch each one, and list the survivors.

    make mutate                                        # every mutation (10-20 min on a busy 2-core CPU)
    python tools/mutate.py --list                      # names and descriptions
    python tools/mutate.py --only icl-log-temperature,field-offsets-dropped
    python tools/mutate.py --only field-offsets-dropped --tests tests/test_tabular_tower.py   # which tests kill it?

The working tree is never written: its files (tracked and untracked, not ignored) are copied to a temporary folder,
each mutation is applied there, its tests run with `pytest -x`, and the file is restored. The heavy imports (torch,
transformers, ...) happen once; each test run is a fork that imports the copy's packages fresh. The unmutated copy
must pass every selected test first. A mutation whose text is no longer in its file is reported as stale (the code
moved on: update the mutation). Prints a Markdown table; exits 1 when a mutation survives or is stale.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = ("tests/test_tabular_tower.py", "tests/test_modeling_flip.py")
COLLATOR = ("tests/test_collators.py",)
RESUME = ("tests/test_reliability.py::test_crash_at_a_random_step_then_resume_equals_an_uninterrupted_run[pretrain]",)
DISTRIBUTED = ("tests/test_distributed.py",)
TRAINER = ("tests/test_training.py::test_text_and_embedding_learning_rates_are_their_param_groups",)
MODELING, BACKBONES, COLLATORS = (
    "modeling_flip/modeling_flip.py",
    "modeling_flip/tabular_backbones.py",
    "processing/collators.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (original text, found exactly once; replacement)
    tests: tuple[str, ...] = MODEL


def one(name: str, description: str, path: str, original: str, mutated: str, tests=MODEL) -> Mutation:
    return Mutation(name, description, path, ((original, mutated),), tests)


MUTATIONS = [
    # the ten of issue 17
    one(
        "icl-log-temperature",
        "ICL divides by log(tau) instead of tau (a negative temperature)",
        MODELING,
        "output.text_embeds, self.log_temperature.exp()",
        "output.text_embeds, self.log_temperature",
    ),
    one(
        "mlm-reads-complete-text",
        "the MLM pass encodes input_ids instead of masked_input_ids",
        MODELING,
        "self._mlm_loss(\n                masked_input_ids,",
        "self._mlm_loss(\n                input_ids,",
    ),
    one(
        "mtm-reads-complete-row",
        "the MTM pass encodes field_ids instead of masked_field_ids",
        MODELING,
        "self._mtm_loss(\n                masked_field_ids,",
        "self._mtm_loss(\n                field_ids,",
    ),
    one(
        "field-offsets-dropped",
        "every field indexes the same embedding rows",
        MODELING,
        "global_ids = field_ids + self.offsets",
        "global_ids = field_ids",
    ),
    one(
        "cross-layer-x_l-for-x_0",
        "DCNv2 experts multiply by x_l instead of x_0",
        BACKBONES,
        "experts = x0.unsqueeze(1) *",
        "experts = x.unsqueeze(1) *",
    ),
    one(
        "loss-weights-ignored",
        "pretraining loss = plain sum of the losses",
        MODELING,
        'sum(getattr(config, f"{name}_weight") * loss for name, loss in losses.items())',
        "sum(losses.values())",
    ),
    one(
        "mlm-head-detached-row",
        "the MLM head gets the complete row detached",
        MODELING,
        "tabular_hidden[rows], word_embeddings)",
        "tabular_hidden[rows].detach(), word_embeddings)",
    ),
    one(
        "mtm-head-detached-row",
        "the MTM head gets the masked row detached",
        MODELING,
        "self.mtm_head(masked_hidden, text_states",
        "self.mtm_head(masked_hidden.detach(), text_states",
    ),
    one(
        "nce-log-q-sign",
        "NCE adds log q instead of subtracting it",
        MODELING,
        "logits = scores - log_noise_probs - math.log(num_noise)",
        "logits = scores + log_noise_probs - math.log(num_noise)",
    ),
    Mutation(
        "collator-ratio-0.30",
        "default MLM / MTM field ratios 0.15 -> 0.30",
        COLLATORS,
        (
            ("mlm_field_ratio: float = 0.15,", "mlm_field_ratio: float = 0.30,"),
            ("mtm_field_ratio: float = 0.15,", "mtm_field_ratio: float = 0.30,"),
        ),
        COLLATOR,
    ),
    # others
    one(
        "contrastive-one-direction",
        "ICL keeps only the tabular-to-text cross-entropy",
        MODELING,
        "loss = (F.cross_entropy(logits_per_tabular, targets) + F.cross_entropy(logits_per_text, targets)) / 2",
        "loss = F.cross_entropy(logits_per_tabular, targets)",
    ),
    one(
        "contrastive-local-targets",
        "under DDP the targets ignore the process rank",
        MODELING,
        "device=tabular_embeds.device) + rank * len(tabular_embeds)",
        "device=tabular_embeds.device)",
    ),
    one(
        "sampled-softmax-keeps-accidental-hits",
        "noise ids equal to the target are not removed",
        MODELING,
        'logits = (scores - log_noise_probs).masked_fill(accidental, float("-inf"))',
        "logits = scores - log_noise_probs",
    ),
    one(
        "mtm-target-without-offset",
        "MTM targets are local ids, not global rows",
        MODELING,
        "targets = self.flip.tabular_model.offsets[fields] + mtm_labels[rows, fields]",
        "targets = mtm_labels[rows, fields]",
    ),
    one(
        "mtm-attends-padding",
        "the MTM query attends over padding tokens",
        MODELING,
        "attn_mask=padding_mask)",
        "attn_mask=None)",
    ),
    one(
        "mean-pooling-counts-padding",
        "mean pooling averages padding states too",
        MODELING,
        "weights = attention_mask.unsqueeze(-1).to(states.dtype)",
        "weights = torch.ones_like(attention_mask).unsqueeze(-1).to(states.dtype)",
    ),
    one(
        "first-order-term-dropped",
        "the ID logit loses its first-order (wide) term",
        MODELING,
        "return hidden, logit + self.linear(global_ids).sum(dim=(1, 2))",
        "return hidden, logit",
    ),
    one(
        "joint-text-weight-alpha",
        "joint logit weighs the text logit by alpha instead of 1 - alpha",
        MODELING,
        "(1 - self.alpha) * output.text_logits",
        "self.alpha * output.text_logits",
    ),
    one(
        "joint-loss-drops-id-bce",
        "the CTR loss forgets BCE(z_id)",
        MODELING,
        "for loss in (output.joint_loss, output.id_loss, output.text_loss)",
        "for loss in (output.joint_loss, output.text_loss)",
    ),
    one(
        "l2-also-in-evaluation",
        "the embedding L2 penalty is added in evaluation too",
        MODELING,
        "if self.training and self.config.embedding_l2 > 0",
        "if self.config.embedding_l2 > 0",
    ),
    one(
        "l2-misses-first-order-table",
        "the embedding L2 penalty skips the first-order table",
        MODELING,
        "tables.embeddings.weight.pow(2).sum() + tables.linear.weight.pow(2).sum()",
        "tables.embeddings.weight.pow(2).sum()",
    ),
    one(
        "cross-gate-softmax-over-batch",
        "DCNv2 expert gates normalised over the batch",
        BACKBONES,
        "weights = gate(x).softmax(dim=-1)",
        "weights = gate(x).softmax(dim=0)",
    ),
    one(
        "cross-layer-no-residual",
        "DCNv2 cross layer without + x_l",
        BACKBONES,
        'x = torch.einsum("bkd,bk->bd", experts, weights) + x',
        'x = torch.einsum("bkd,bk->bd", experts, weights)',
    ),
    one(
        "deepfm-without-half",
        "DeepFM counts every field pair twice",
        BACKBONES,
        "interaction = 0.5 * (",
        "interaction = (",
    ),
    one(
        "autoint-keys-values-swapped",
        "AutoInt attends with keys and values swapped",
        BACKBONES,
        "q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)",
        "q.transpose(1, 2), v.transpose(1, 2), k.transpose(1, 2)",
    ),
    one(
        "autoint-no-residual",
        "AutoInt layer without its residual projection",
        BACKBONES,
        "torch.relu(attended + self.residual(x))",
        "torch.relu(attended)",
    ),
    one(
        "projection-no-residual",
        "the projection head drops its residual connection",
        MODELING,
        "return self.layer_norm(projected + self.dropout(",
        "return self.layer_norm(self.dropout(",
    ),
    one(
        "mlm-head-no-tanh",
        "the MLM head drops its tanh",
        MODELING,
        "fused = self.dropout(torch.tanh(self.dense(torch.cat([token_states, tabular_hidden], dim=-1))))",
        "fused = self.dropout(self.dense(torch.cat([token_states, tabular_hidden], dim=-1)))",
    ),
    one(
        "mtm-query-unnormalised",
        "the MTM query skips its LayerNorm",
        MODELING,
        "query = self.query_norm(self.query(tabular_hidden))",
        "query = self.query(tabular_hidden)",
    ),
    one(
        "cls-pooling-second-token",
        "CLS pooling reads the second token",
        MODELING,
        "return states, states[:, 0]",
        "return states, states[:, 1]",
    ),
    one(
        "offsets-not-refilled-on-load",
        "from_pretrained leaves the (non-persistent) field offsets uninitialised",
        MODELING,
        "            init.copy_(module.offsets, torch.tensor(config.field_offsets))\n",
        "",
    ),
    one(
        "noise-ignores-feature-counts",
        "set_feature_frequencies keeps the uniform MTM noise",
        MODELING,
        "        self.noise_probs.copy_(probs)\n",
        "",
    ),
    one(
        "ddp-local-mean",
        "under DDP MLM / MTM divide by the local count (2 x B != 1 x 2B)",
        MODELING,
        "return total.clamp_min(1.0) / dist.get_world_size()",
        "return max(count, 1)",
        DISTRIBUTED,
    ),
    one(
        "collator-count-floor",
        "m = max(1, floor(F * ratio)) instead of round",
        COLLATORS,
        "return max(1, round(num_fields * ratio))",
        "return max(1, int(num_fields * ratio))",
        COLLATOR,
    ),
    one(
        "collator-masks-template-tokens",
        "MLM masks the template words next to a chosen field 0",
        COLLATORS,
        "masked_tokens = text_fields.gather(1, token_field_index.clamp(min=0)) & (token_field_index >= 0)",
        "masked_tokens = text_fields.gather(1, token_field_index.clamp(min=0))",
        COLLATOR,
    ),
    one(
        "collator-ignores-truncation",
        "MLM may pick fields that truncation left without tokens",
        COLLATORS,
        "random_field_choice(has_tokens,",
        "random_field_choice(torch.ones_like(has_tokens),",
        COLLATOR,
    ),
    one(
        "collator-same-fields-ignored",
        "mask_same_fields draws the MTM fields independently",
        COLLATORS,
        "if self.mask_same_fields:",
        "if False:",
        COLLATOR,
    ),
    one(
        "collator-mtm-labels-everywhere",
        "MTM labels at every field, not only the masked ones",
        COLLATORS,
        '"mtm_labels": field_ids.masked_fill(~table_fields, IGNORE_INDEX)',
        '"mtm_labels": field_ids',
        COLLATOR,
    ),
    Mutation(
        "collator-running-generator",
        "masks from one generator seeded once (the pre-fix collator: not restored on resume)",
        COLLATORS,
        (
            (
                "        self.seed = seed\n",
                "        self.seed = seed\n        self._generator = batch_generator(seed)\n",
            ),
            ("generator = batch_generator(self.seed, field_ids, input_ids)", "generator = self._generator"),
        ),
        RESUME + COLLATOR,
    ),
    one(
        "text-lr-on-the-other-group",
        "text_learning_rate applied to the non-text parameters",
        "training/trainer.py",
        'if TEXT_TOWER_NAME in name.split("."):',
        'if TEXT_TOWER_NAME not in name.split("."):',
        TRAINER,
    ),
    one(
        "embedding-lr-on-one-table",
        "embedding_learning_rate applied to the embedding table only, not the first-order table",
        "training/trainer.py",
        'ID_TABLE_NAMES = ("tabular_model.embeddings.weight", "tabular_model.linear.weight")',
        'ID_TABLE_NAMES = ("tabular_model.embeddings.weight",)',
        TRAINER,
    ),
    one(
        "resume-resets-early-stopping",
        "a resumed finetuning starts its early-stopping patience count from zero (the TrainingArguments default)",
        "training/arguments.py",
        "    restore_callback_states_from_checkpoint: bool = field(\n        default=True,",
        "    restore_callback_states_from_checkpoint: bool = field(\n        default=False,",
        ("tests/test_training.py::test_resumed_run_keeps_the_early_stopping_count",),
    ),
    one(
        "signal-skips-checkpoint",
        "a SIGTERM ends the run without saving a checkpoint at the current step",
        "training/callbacks.py",
        "            control.should_training_stop = True\n"
        '            control.should_save = args.save_strategy != "no"\n'
        "        return control\n\n    def on_epoch_end",
        "            control.should_training_stop = True\n        return control\n\n    def on_epoch_end",
        ("tests/test_training.py::test_a_signal_saves_a_checkpoint_and_exits_and_the_run_resumes",),
    ),
    one(
        "signal-cut-evaluates",
        "a SIGTERM inside an epoch also evaluates there (an extra step towards early stopping's patience)",
        "training/callbacks.py",
        "            control.should_evaluate = False  # the Trainer's",
        "            pass  # the Trainer's",
        ("tests/test_training.py::test_a_signal_saves_a_checkpoint_and_exits_and_the_run_resumes",),
    ),
    one(
        "stop-not-agreed-across-processes",
        "a process stops on its own time budget or signal while the others go on (a hang in DDP)",
        "training/callbacks.py",
        "    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:",
        "    if True:",
        ("tests/test_distributed.py::test_a_stop_seen_by_one_process_stops_all",),
    ),
    one(
        "cell-resumes-changed-arguments",
        "a killed quality cell resumes from its checkpoints even when the cell's arguments changed since",
        "benchmarks/quality.py",
        'if log and log["argv"] == argv else None',
        "if log else None",
        ("tests/test_quality.py::test_a_killed_cell_resumes_from_its_last_epoch_and_records_both_segments",),
    ),
    one(
        "output-keys-in-set-order",
        "a model output keeps its keys in the order they were set (loss last): output[0] and the Trainer's "
        "predictions no longer start with loss / logits",
        "modeling_flip/modeling_flip.py",
        "    return type(output)(**dict(output.items()))",
        "    return output",
        (
            "tests/test_modeling_flip.py::test_ctr_shapes_and_losses",
            "tests/test_training.py::test_a_joint_models_id_auc_is_its_id_tower_scored_alone",
        ),
    ),
    one(
        "tower-aucs-swapped",
        "a joint model's id_auc / text_auc name the other tower",
        "training/finetune.py",
        'TOWER_LOGITS = {"id": "id_logits", "text": "text_logits"}',
        'TOWER_LOGITS = {"text": "id_logits", "id": "text_logits"}',
        ("tests/test_training.py::test_a_joint_models_id_auc_is_its_id_tower_scored_alone",),
    ),
    one(
        "cell-time-last-segment",
        "a resumed quality cell reports the wall time of its last segment only (hours of a cut cell went missing)",
        "benchmarks/quality.py",
        '"wall_time_s": round(sum(t for t in times if t is not None), 1),',
        '"wall_time_s": times[-1],',
        ("tests/test_quality.py::test_a_killed_cell_resumes_from_its_last_epoch_and_records_both_segments",),
    ),
    one(
        "cell-scores-left-in-run-folder",
        "a cell's test scores stay in its run folder only, so a new machine loses the slice views",
        "benchmarks/quality.py",
        "    recorded_scores(suite, row, point, seed)  # before the record: a recorded cell has its scores\n",
        "",
        ("tests/test_quality.py::test_quality_suite_runs_caches_and_tabulates",),
    ),
    one(
        "pretraining-over-lost-checkpoints",
        "a pretraining whose checkpoints are lost starts over and writes over the record of the run cells came from",
        "benchmarks/quality.py",
        "    restart_lost_pretraining(suite, spec.key)\n",
        "",
        ("tests/test_quality.py::test_a_pretraining_whose_checkpoints_are_lost_is_not_run_over_its_record",),
    ),
    one(
        "names-split-on-every-comma",
        "--points splits a grid label holding a comma into two unknown labels",
        "benchmarks/quality.py",
        "points = split_names(args.points, sorted(labels)) if args.points else None",
        'points = args.points.split(",") if args.points else None',
        ("tests/test_quality.py::test_command_line_names_holding_a_comma_stay_whole",),
    ),
]

HEAVY_IMPORTS = ("torch", "transformers", "datasets", "accelerate", "peft", "pandas", "sklearn", "pytest")


def copy_repo(destination: Path) -> None:
    """Copy the working tree's tracked and untracked-but-not-ignored files (no .git, .venv, outputs)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_tests(copy: Path, tests: tuple[str, ...], log: Path, timeout: float) -> tuple[int, str]:
    """pytest -x over `tests` in a fork rooted at `copy`; (exit code, first failing test id or "")."""
    pid = os.fork()
    if pid == 0:  # child: fresh imports of the copy's packages; the heavy libraries are already loaded
        os.setpgrp()
        with open(log, "w") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
        os.chdir(copy)
        sys.path.insert(0, str(copy))
        os.environ["PYTHONPATH"] = str(copy)
        import pytest

        code = pytest.main(["-x", "-q", "-rf", "-p", "no:cacheprovider", *tests])
        sys.stdout.flush()
        os._exit(int(code))
    deadline, code = time.time() + timeout, -1
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):  # the run's group: also what os._exit orphaned (mp Managers)
        os.killpg(pid, signal.SIGKILL)
    if code == -1:
        os.waitpid(pid, 0)
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", log.read_text(), re.MULTILINE)
    return code, failed.group(1) if failed else ""


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Write the mutated file into the copy; returns the original text, or None when an edit is stale."""
    path = copy / mutation.path
    original = text = path.read_text()
    for old, new in mutation.edits:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--tests", nargs="+", help="run these pytest ids instead of each mutation's own selection")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation's test run")
    args = parser.parse_args(argv)
    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name:40s} {mutation.path:34s} {mutation.description}")
        return 0
    selected = MUTATIONS
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            parser.error(f"unknown mutations {unknown}; see --list")
        selected = [m for m in MUTATIONS if m.name in names]
    if args.tests:
        selected = [dataclasses.replace(mutation, tests=tuple(args.tests)) for mutation in selected]
    for module in HEAVY_IMPORTS:  # loaded once, inherited by every forked test run
        __import__(module)
    import transformers  # noqa: F401  (its lazy submodules: the Trainer and BERT load once too)
    from transformers import BertModel, Trainer  # noqa: F401

    rows, start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="flip-mutate-") as folder:
        copy, logs = Path(folder) / "repo", Path(folder) / "logs"
        copy.mkdir()
        logs.mkdir()
        copy_repo(copy)
        baseline = tuple(dict.fromkeys(test for mutation in selected for test in mutation.tests))
        code, failed = run_tests(copy, baseline, logs / "baseline.log", args.timeout * 2)
        if code != 0:
            print((logs / "baseline.log").read_text()[-5000:])
            print(f"the unmutated copy fails {failed or 'its tests'} (exit {code}): fix that first")
            return 2
        print(f"baseline: {len(baseline)} test selections pass unmutated ({time.time() - start:.0f} s)", flush=True)
        for mutation in selected:
            began = time.time()
            original = apply(copy, mutation)
            if original is None:
                rows.append((mutation, "STALE", "text not found: update the mutation"))
            else:
                try:
                    code, failed = run_tests(copy, mutation.tests, logs / f"{mutation.name}.log", args.timeout)
                finally:
                    (copy / mutation.path).write_text(original)
                verdict = {0: "SURVIVED", 1: "killed", -1: "killed (timeout)"}.get(code, f"killed (exit {code})")
                rows.append((mutation, verdict, failed))
            print(f"{mutation.name}: {rows[-1][1]} {rows[-1][2]} ({time.time() - began:.0f} s)", flush=True)
    survivors = [mutation.name for mutation, verdict, _ in rows if verdict in ("SURVIVED", "STALE")]
    print("\n| mutation | file | what it does | result | first failing test |\n|---|---|---|---|---|")
    for mutation, verdict, failed in rows:
        print(f"| `{mutation.name}` | `{mutation.path}` | {mutation.description} | {verdict} | `{failed}` |")
    killed = sum(verdict.startswith("killed") for _, verdict, _ in rows)
    print(f"\n{len(rows)} mutations: {killed} killed, {len(survivors)} survived or stale {survivors}")
    print(f"({time.strftime('%Y-%m-%d')}, {time.time() - start:.0f} s)")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
