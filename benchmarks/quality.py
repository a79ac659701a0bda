"""Quality benchmark of FLIP on the PROTOCOL.md split: declarative rows x seeds, run through the library's own
`training.pretrain` / `training.finetune` entry points, cached per (row, seed), aggregated into a Markdown table.

    python benchmarks/quality.py run --rows DCNv2,DeepFM,AutoInt      # ID-only baselines, 3 seeds each
    python benchmarks/quality.py run --rows FLIP_ID-DCNv2              # pretrains once (cached), then 3 finetunings
    python benchmarks/quality.py table                                 # Markdown table of what has finished
    python benchmarks/quality.py table --write_results benchmarks/RESULTS.md   # ... into the Quality section

Every finished cell is a JSON file under `OUTPUT_DIR/cells/<row>/seed<k>.json` (plus the test-split
probabilities as `.npz` for the plots); rerunning skips finished cells and finished pretrainings, so an
interrupted run resumes. One pretraining checkpoint (`OUTPUT_DIR/pretrain/<key>`) serves every finetuning seed
of every row that names it. Early stopping and checkpoint selection use the validation split only (the
library's finetune script); the test split is scored once per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/quality.py` from anywhere
    sys.path.insert(0, str(REPO))

from training import finetune, pretrain  # noqa: E402
from training.arguments import DataArguments, ModelArguments  # noqa: E402
from training.common import write_json  # noqa: E402
from training.ctr_metrics import rela_impr  # noqa: E402

# frozen copies of the demo configs: the library's own demo configs changed while the benchmark ran
QUALITY_CONFIGS = Path(__file__).resolve().parent / "quality_configs"
BASE_ROW = "DCNv2"
MARK_START, MARK_END = "<!-- quality:start -->", "<!-- quality:end -->"


def flags(text: str) -> tuple[str, ...]:
    """`"--a 1 --b 2"` -> `("--a", "1", "--b", "2")`."""
    return tuple(text.split())


# FLIP pretraining on a CPU budget: measured ~9 rows/s with the 2-layer MiniLM on 2 shared cores, so 300 steps x 64
# rows (~0.24 epoch of ML-100k); the cosine schedule spans max_steps, max_train_minutes caps the wall time.
# Tabular tower / heads at 1e-3 (short budget: the reference 1e-4 is meant for 30 epochs), the text tower at the
# reference 1e-4. Checkpoints every 50 steps keep trainer_state.json (the loss curves) and allow resuming.
CPU_PRETRAIN_ARGS = flags(
    "--max_steps 300 --max_train_minutes 30 --per_device_train_batch_size 64 --learning_rate 1e-3 "
    "--text_learning_rate 1e-4 --warmup_steps 0.05 --logging_steps 10 --max_eval_samples 1000 "
    "--save_strategy steps --save_steps 50 --save_total_limit 1"
)
# The ablation set: every pretraining gets the same 300 steps (no wall-time cap in practice: 45 minutes is ~3x the
# ~11 minutes one takes on an idle core), so the variants differ only in the switch they flip. Mean pooling: see
# `flip_mean` below.
CPU_PRETRAIN_300_ARGS = (*CPU_PRETRAIN_ARGS, "--max_train_minutes", "45", "--text_pooling", "mean")


def cpu_text_args(max_steps: int = 300, eval_steps: int = 100) -> tuple[str, ...]:
    """PLM-only / joint on CPU: MiniLM at 5e-5 (reference), rest at 1e-3, batch 64, at most `max_steps` steps /
    12 minutes, validation (full split, for the best checkpoint) every `eval_steps` steps and at the time limit."""
    return flags(
        "--learning_rate 1e-3 --text_learning_rate 5e-5 --per_device_train_batch_size 64 "
        f"--per_device_eval_batch_size 256 --max_steps {max_steps} --max_train_minutes 12 --eval_strategy steps "
        f"--eval_steps {eval_steps} --save_strategy steps --save_steps {eval_steps} --logging_steps 20"
    )


CPU_TEXT_ARGS = cpu_text_args()


@dataclass(frozen=True)
class TextModel:
    """A PLM: `source` (name or path), optionally truncated to its first `num_layers` layers (a local copy)."""

    source: str
    num_layers: int | None = None

    @property
    def label(self) -> str:
        name = Path(self.source.rstrip("/")).name
        return f"{name} (first {self.num_layers} layers)" if self.num_layers else name


@dataclass(frozen=True)
class Pretraining:
    """One FLIP pretraining run, shared by the finetuning rows that name its key."""

    key: str
    text_model: TextModel
    backbone: str = "dcnv2"
    args: tuple[str, ...] = ()
    seed: int = 42


@dataclass(frozen=True)
class Row:
    """One line of the quality table: a finetuning variant (`mode` id / text / joint), its backbone, its PLM
    (None for ID-only rows), the pretraining it starts from (None = from scratch) and extra finetune flags.
    `towers` = (tabular row, text row): a joint row "trained from these two" instead, starting from the finetuned
    models of those rows (same seed; the text row's `text_tower_seed` when set)."""

    name: str
    mode: str
    backbone: str = "dcnv2"
    text_model: TextModel | None = None
    pretraining: str | None = None
    args: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    towers: tuple[str, str] | None = None
    text_tower_seed: int | None = None


@dataclass
class Suite:
    """Data, base configs, pretrainings and rows of one benchmark."""

    dataset: str
    tokenizer_model: str
    output_dir: str
    rows: list[Row]
    pretrainings: dict[str, Pretraining] = field(default_factory=dict)
    finetune_config: str = str(QUALITY_CONFIGS / "finetune_cpu.yaml")
    pretrain_config: str = str(QUALITY_CONFIGS / "pretrain_cpu.yaml")
    max_length: int = 80
    common_args: tuple[str, ...] = ()

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)


FIVE_SEEDS = (0, 1, 2, 3, 4)  # the rows of claim 2: DCNv2's seed-to-seed spread on test is large


def default_suite(output_dir: str = "outputs/quality") -> Suite:
    """movielens-100k on CPU: ID-only baselines, FLIP_ID / FLIP / FLIP_PLM with a 2-layer MiniLM, PLM-only,
    and the loss ablations of FLIP_ID (each with its own pretraining), in priority order."""
    minilm2 = TextModel("minilm", num_layers=2)
    mean = ("--text_pooling", "mean")
    text_mean, alpha_half = (*CPU_TEXT_ARGS, *mean), ("--joint_alpha_init", "0.5")
    stacked = (*cpu_text_args(max_steps=100, eval_steps=50), *mean, *alpha_half)
    pretrainings = {
        "flip": Pretraining("flip", minilm2, args=CPU_PRETRAIN_ARGS),
        # all-MiniLM-L6-v2 is a mean-pooling sentence model: the first-token state of its first 2 layers is the same
        # vector for every prompt (cosine > 0.99999), so the default `cls` pooling gives ICL nothing to align
        "flip_mean": Pretraining("flip_mean", minilm2, args=(*CPU_PRETRAIN_ARGS, *mean)),
        # the equal-budget ablation set (300 steps each, after the MTM-bias fix)
        "p300": Pretraining("p300", minilm2, args=CPU_PRETRAIN_300_ARGS),
        **{
            f"p300_no_{loss}": Pretraining(
                f"p300_no_{loss}", minilm2, args=(*CPU_PRETRAIN_300_ARGS, f"--use_{loss}", "false")
            )
            for loss in ("icl", "mlm", "mtm")
        },
        "p300_mtm_softmax": Pretraining(
            "p300_mtm_softmax", minilm2, args=(*CPU_PRETRAIN_300_ARGS, "--mtm_loss", "softmax")
        ),
        "p300_deepfm": Pretraining("p300_deepfm", minilm2, backbone="deepfm", args=CPU_PRETRAIN_300_ARGS),
        "p300_minilm6": Pretraining("p300_minilm6", TextModel("minilm"), args=CPU_PRETRAIN_300_ARGS),
        # one full epoch (1,250 steps of 64 rows), capped at 35 minutes: does a longer pretraining move FLIP_ID?
        "p1250": Pretraining(
            "p1250", minilm2, args=(*CPU_PRETRAIN_300_ARGS, "--max_steps", "1250", "--max_train_minutes", "35")
        ),
    }
    rows = [
        Row("DCNv2", "id", "dcnv2", seeds=FIVE_SEEDS),
        Row("DeepFM", "id", "deepfm"),
        Row("AutoInt", "id", "autoint"),
        Row("FLIP_ID-DCNv2", "id", pretraining="flip", seeds=FIVE_SEEDS),
        Row("FLIP_ID-DCNv2 (mean pooling)", "id", pretraining="flip_mean", seeds=FIVE_SEEDS),
        Row("PLM-only (mean pooling)", "text", text_model=minilm2, args=text_mean),
        Row("FLIP-DCNv2 (joint)", "joint", text_model=minilm2, pretraining="flip", args=CPU_TEXT_ARGS, seeds=(0,)),
        Row("PLM-only", "text", text_model=minilm2, args=CPU_TEXT_ARGS, seeds=(0,)),
        Row("FLIP_ID-DCNv2 [300 steps]", "id", pretraining="p300", seeds=FIVE_SEEDS),
        *[
            Row(f"FLIP_ID-DCNv2 [300 steps] w/o {loss.upper()}", "id", pretraining=f"p300_no_{loss}")
            for loss in ("mtm", "icl", "mlm")
        ],
        Row("FLIP_ID-DCNv2 [300 steps] MTM softmax", "id", pretraining="p300_mtm_softmax"),
        Row("FLIP_ID-DeepFM [300 steps]", "id", pretraining="p300_deepfm"),
        Row("FLIP_ID-DCNv2 [300 steps] MiniLM-L6", "id", pretraining="p300_minilm6"),
        Row("FLIP_ID-DCNv2 [1 epoch]", "id", pretraining="p1250"),
        Row("FLIP_PLM [300 steps]", "text", text_model=minilm2, pretraining="p300", args=text_mean),
        # the joint model at the text rows' budget, with and without FLIP pretraining (PROTOCOL.md's third reference)
        Row("FLIP-DCNv2 (joint) [300 steps]", "joint", text_model=minilm2, pretraining="p300", args=text_mean),
        Row("ID+PLM joint (mean pooling)", "joint", text_model=minilm2, args=text_mean),
        # alpha starts at 0 (the reference's: the text logit alone) and Adam moves it ~1e-3 per step, so in 300 steps
        # the joint logit stays mostly the weaker text tower's; the same two rows with both towers mixed from step 0
        *[
            Row(f"{name} alpha 0.5", "joint", text_model=minilm2, pretraining=key, args=(*text_mean, *alpha_half))
            for name, key in (("FLIP-DCNv2 (joint) [300 steps]", "p300"), ("ID+PLM joint (mean pooling)", None))
        ],
        # "trained from these two" (PROTOCOL.md's joint reference): the joint model starts from the separately
        # finetuned ID and text towers (alpha 0.5) and trains 100 more steps; the text tower of the run without
        # pretraining is PLM-only's seed 0 for every seed (the other seeds' models were not kept)
        Row(
            "FLIP (joint) from FLIP_ID + FLIP_PLM",
            "joint",
            text_model=minilm2,
            args=stacked,
            towers=("FLIP_ID-DCNv2 [300 steps]", "FLIP_PLM [300 steps]"),
        ),
        Row(
            "ID+PLM joint from DCNv2 + PLM-only",
            "joint",
            text_model=minilm2,
            args=stacked,
            towers=("DCNv2", "PLM-only (mean pooling)"),
            text_tower_seed=0,
        ),
    ]
    return Suite(
        dataset="movielens-100k",
        tokenizer_model="minilm",
        output_dir=output_dir,
        rows=rows,
        pretrainings=pretrainings,
        common_args=("--disable_tqdm", "true"),
    )


# ----------------------------------------------------------------------------------------------------- running


def hardware() -> str:
    """CPU model, core count and the 1-minute load average at call time (the machine is shared), or the GPU."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model} CPU, {os.cpu_count()} cores (shared, load {load:.1f})"


def prepared_data(suite: Suite) -> str:
    """The prepared folder of the suite's dataset (tokenised with `tokenizer_model`), prepared on first use."""
    from training.data import prepared_dir

    data_args = DataArguments(
        dataset=suite.dataset, data_dir=os.path.join(suite.output_dir, "data"), max_length=suite.max_length, num_proc=1
    )
    return prepared_dir(ModelArguments(text_model=suite.tokenizer_model), data_args)


def text_model_path(text_model: TextModel, output_dir: str) -> str:
    """Local path of the PLM; a truncated copy (first `num_layers` layers, same weights and tokenizer) is saved
    under `output_dir/text_models/` once, since the scripts take a model path and no layer-count override."""
    from transformers import AutoModel, AutoTokenizer

    from processing.text_models import resolve_text_model

    source = resolve_text_model(text_model.source)
    if not text_model.num_layers:
        return source
    target = os.path.join(output_dir, "text_models", f"{Path(source).name}-L{text_model.num_layers}")
    if not os.path.isfile(os.path.join(target, "model.safetensors")):
        AutoModel.from_pretrained(source, num_hidden_layers=text_model.num_layers).save_pretrained(target)
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def run_pretraining(suite: Suite, spec: Pretraining, data: str) -> str:
    """The checkpoint folder of `spec`, pretrained with `training.pretrain.main` unless it already finished."""
    out = os.path.join(suite.output_dir, "pretrain", spec.key)
    if os.path.isfile(os.path.join(out, "results.json")):
        return out
    text_model = text_model_path(spec.text_model, suite.output_dir)
    argv = [suite.pretrain_config, "--dataset", data, "--text_model", text_model, "--backbone", spec.backbone]
    argv += ["--output_dir", out, "--seed", str(spec.seed), *suite.common_args, *spec.args]
    hw = hardware()
    results = pretrain.main(argv)
    record = {"key": spec.key, **results, "hardware": hw, "library_hardware": results.get("hardware")}
    write_json(os.path.join(out, "quality_pretraining.json"), record)
    return out


def finetune_argv(
    suite: Suite, row: Row, seed: int, data: str, init_from: str | None, out: str, tabular_from: str | None = None
) -> list[str]:
    """`training.finetune` arguments of one cell: base config, data, mode, backbone or checkpoint, seed, row flags."""
    argv = [suite.finetune_config, "--dataset", data, "--ctr_mode", row.mode, "--output_dir", out, "--seed", str(seed)]
    if row.text_model is not None:
        argv += ["--text_model", text_model_path(row.text_model, suite.output_dir)]
    argv += ["--init_from", init_from] if init_from else ["--backbone", row.backbone]
    argv += ["--init_tabular_from", tabular_from] if tabular_from else []
    return argv + list(suite.common_args) + list(row.args)


def cell_path(suite: Suite, row: Row, seed: int, suffix: str = ".json") -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in row.name)
    return os.path.join(suite.output_dir, "cells", slug, f"seed{seed}{suffix}")


def run_dir(suite: Suite, row: Row, seed: int) -> str:
    """Where `training.finetune` writes the best model of one (row, seed)."""
    return os.path.join(suite.output_dir, "runs", Path(cell_path(suite, row, seed)).parent.name, f"seed{seed}")


def score_test(model_dir: str, data: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, click probabilities) of the saved best model on the test split (the plots' ROC / calibration)."""
    from datasets import load_from_disk

    from modeling_flip import FlipForCTR
    from processing import FlipProcessor
    from processing.collators import DataCollatorForCTR
    from training.common import predict_logits
    from training.ctr_metrics import sigmoid

    model = FlipForCTR.from_pretrained(model_dir)
    test = load_from_disk(data)["test"]
    collator = DataCollatorForCTR(
        FlipProcessor.from_pretrained(data).tokenizer, include_text=model.config.ctr_mode != "id"
    )
    probs = sigmoid(predict_logits(model, test, collator, batch_size=512, description="test", device="cpu"))
    return np.asarray(test["labels"]), probs


def run_cell(suite: Suite, row: Row, seed: int, data: str) -> dict:
    """Finetune one (row, seed), cache the record (JSON); ID-only rows also keep their test probabilities (.npz,
    for the ROC / calibration plots; a second test pass of a text tower is too slow on CPU)."""
    init_from = run_pretraining(suite, suite.pretrainings[row.pretraining], data) if row.pretraining else None
    tabular_from = None
    if row.towers:
        tabular_row, text_row = (suite.row(name) for name in row.towers)
        tabular_from = run_dir(suite, tabular_row, seed)
        init_from = run_dir(suite, text_row, seed if row.text_tower_seed is None else row.text_tower_seed)
    out = run_dir(suite, row, seed)
    argv = finetune_argv(suite, row, seed, data, init_from, out, tabular_from)
    hw = hardware()
    results = finetune.main(argv)
    for checkpoint in Path(out).glob("checkpoint-*"):  # the final folder holds the best model
        shutil.rmtree(checkpoint, ignore_errors=True)
    os.makedirs(os.path.dirname(cell_path(suite, row, seed)), exist_ok=True)
    if row.mode == "id":
        labels, probs = score_test(out, data)
        np.savez_compressed(cell_path(suite, row, seed, ".npz"), labels=labels, probs=probs)
    record = {
        "row": row.name,
        "seed": seed,
        "row_spec": asdict(row),
        "argv": ["python", "-m", "training.finetune", *argv],
        "hardware": hw,
        "git_commit": git_commit(),
        "test_auc": results["test"]["test_auc"],
        "test_logloss": results["test"]["test_logloss"],
        "test_rows": results.get("test_rows"),
        "validation_auc": results["validation"].get("eval_auc"),
        "validation_logloss": results["validation"].get("eval_logloss"),
        "epoch": results["test"].get("epoch"),
        "wall_time_s": results["wall_time_s"],
        "pretraining": pretraining_record(init_from) if row.pretraining else None,
        "finetune_results": results,
    }
    write_json(cell_path(suite, row, seed), record)
    return record


def git_commit() -> str | None:
    """HEAD of the repository (library files change while the benchmark runs: each cell says which code ran)."""
    import subprocess

    try:
        command = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
        out = subprocess.run(command, check=False, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def pretraining_record(init_from: str | None) -> dict | None:
    """Key facts of the pretraining a cell started from (wall time, hardware, steps, validation losses)."""
    if not init_from:
        return None
    info = json.loads(Path(init_from, "quality_pretraining.json").read_text())
    return {
        "checkpoint": init_from,
        "wall_time_s": info["wall_time_s"],
        "hardware": info["hardware"],
        "validation": info["validation"],
    }


def run_rows(suite: Suite, names: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[str]:
    """Run the unfinished cells of the named rows (all by default) in suite order; a failing cell is logged and
    skipped. Returns the names of the failed cells."""
    data = prepared_data(suite)
    rows = [row for row in suite.rows if names is None or row.name in names]
    unknown = set(names or ()) - {row.name for row in suite.rows}
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[row.name for row in suite.rows]}")
    failed = []
    for row in rows:
        for seed in seeds or row.seeds:
            if os.path.isfile(cell_path(suite, row, seed)):
                continue
            print(f"[quality] {row.name} seed {seed} ({time.strftime('%H:%M:%S')})", flush=True)
            try:
                run_cell(suite, row, seed, data)
            except Exception:  # noqa: BLE001  (one failing cell must not stop the others)
                traceback.print_exc()
                failed.append(f"{row.name}/seed{seed}")
    return failed


# ----------------------------------------------------------------------------------------------------- table


def load_cells(suite: Suite) -> dict[str, list[dict]]:
    """Finished cell records per row name, in suite row order (rows without a finished cell are left out)."""
    cells = {}
    for row in suite.rows:
        folder = Path(cell_path(suite, row, 0)).parent
        records = [json.loads(path.read_text()) for path in sorted(folder.glob("seed*.json"))]
        if records:
            cells[row.name] = records
    return cells


def full_test_metrics(suite: Suite, record: dict) -> dict:
    """The cell's test AUC / LogLoss / row count: from quality.py's own scoring of the saved best model on the full
    test split (`.npz`) when there is one, else the finetune script's test pass. (Cells run while the library's
    demo config bounded the script's test pass to 3,000 rows are thereby still reported on all 10,000 rows.)"""
    from training.ctr_metrics import ctr_metrics

    npz = Path(cell_path(suite, suite.row(record["row"]), record["seed"], ".npz"))
    if npz.is_file():
        scores = np.load(npz)
        metrics = ctr_metrics(scores["labels"], scores["probs"])
        return {"test_auc": metrics["auc"], "test_logloss": metrics["logloss"], "test_rows": len(scores["labels"])}
    rows = record.get("test_rows") or record["finetune_results"].get("test_rows")
    return {"test_auc": record["test_auc"], "test_logloss": record["test_logloss"], "test_rows": rows}


def summarize(records: list[dict]) -> dict:
    """Mean / std (ddof=1; 0 for one seed) of test AUC and LogLoss, mean validation AUC and wall time."""

    def stats(key: str) -> tuple[float, float]:
        values = np.array([record[key] for record in records], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    pre = records[0]["pretraining"]
    return {
        "auc": stats("test_auc"),
        "logloss": stats("test_logloss"),
        "val_auc": stats("validation_auc")[0],
        "seeds": len(records),
        "epochs": float(np.mean([record.get("epoch") or np.nan for record in records])),
        "test_rows": sorted({record.get("test_rows") for record in records}, key=str),
        "wall_time_s": float(np.mean([record["wall_time_s"] for record in records])),
        "pretrain_wall_time_s": pre["wall_time_s"] if pre else None,
        "hardware": records[0]["hardware"],
    }


def verdict(summary: dict, base: dict) -> str:
    """PROTOCOL.md 2-std rule on test AUC: |mean difference| < 2 x the larger std of the two rows -> tie."""
    diff = summary["auc"][0] - base["auc"][0]
    noise = 2 * max(summary["auc"][1], base["auc"][1])
    if summary["seeds"] < 2:
        return f"{diff:+.4f} (1 seed: no std, not a claim)"
    if abs(diff) < noise:
        return f"tie ({diff:+.4f}, 2 std = {noise:.4f})"
    return f"{'beats' if diff > 0 else 'below'} ({diff:+.4f}, 2 std = {noise:.4f})"


def markdown_table(suite: Suite) -> str:
    """The quality table of the finished cells (RelaImpr and verdict against the DCNv2 row)."""
    cells = load_cells(suite)
    cells = {name: [{**r, **full_test_metrics(suite, r)} for r in records] for name, records in cells.items()}
    summaries = {name: summarize(records) for name, records in cells.items()}
    base = summaries.get(BASE_ROW)
    header = (
        "| model | PLM | pretraining | test AUC | test LogLoss | val AUC | RelaImpr vs DCNv2 | vs DCNv2 (2-std rule) "
        "| seeds | test rows | epochs trained | wall time / run | hardware |"
    )
    lines = [header, "|" + "---|" * 13]
    for name, s in summaries.items():
        row = suite.row(name)
        plm = (
            row.text_model.label
            if row.text_model
            else (
                suite.pretrainings[row.pretraining].text_model.label + " (pretraining only)"
                if row.pretraining
                else "-"
            )
        )
        pre = (
            f"towers of {' + '.join(row.towers)}"
            if row.towers
            else f"`{row.pretraining}` ({s['pretrain_wall_time_s']:.0f} s, once)"
            if row.pretraining
            else "none"
        )
        test_rows = "/".join(map(str, s["test_rows"]))
        rel = f"{rela_impr(s['auc'][0], base['auc'][0]):+.2f}%" if base else "n/a"
        vs = "(base)" if name == BASE_ROW else verdict(s, base) if base else "n/a"
        lines.append(
            f"| {name} | {plm} | {pre} | {s['auc'][0]:.4f} ± {s['auc'][1]:.4f} | {s['logloss'][0]:.4f} ± "
            f"{s['logloss'][1]:.4f} | {s['val_auc']:.4f} | {rel} | {vs} | {s['seeds']} | {test_rows} "
            f"| {s['epochs']:.2f} | {s['wall_time_s']:.0f} s "
            f"| {s['hardware']} |"
        )
    return "\n".join(lines)


def pretraining_table(suite: Suite) -> str:
    """One line per finished pretraining: PLM, steps and epochs done, wall time, final validation losses."""
    lines = [
        "| pretraining | PLM | flags | steps | epochs | wall time | val ICL / MLM / MTM loss | hardware |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, spec in suite.pretrainings.items():
        info_path = Path(suite.output_dir, "pretrain", key, "quality_pretraining.json")
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        val = info["validation"]
        states = sorted(Path(info_path.parent).glob("checkpoint-*/trainer_state.json"))
        steps = max((json.loads(state.read_text())["global_step"] for state in states), default=None)
        losses = " / ".join(f"{val.get(f'eval_{name}_loss', float('nan')):.3f}" for name in ("icl", "mlm", "mtm"))
        lines.append(
            f"| `{key}` | {spec.text_model.label} | `{' '.join(spec.args)}` | {steps} | {val.get('epoch', 0):.3f} "
            f"| {info['wall_time_s']:.0f} s | {losses} | {info['hardware']} |"
        )
    return "\n".join(lines)


def replace_section(path: str, body: str) -> None:
    """Replace the text between the quality markers of `path` (append the marked section when missing)."""
    text = Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else ""
    block = f"{MARK_START}\n{body.strip()}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    Path(path).write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "table", "list"])
    parser.add_argument("--output_dir", default="outputs/quality", help="cells, pretrainings, runs, data")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: each row's seeds)")
    parser.add_argument("--write_results", default=None, help="also write the table into this file's section")
    parser.add_argument("--notes", default=None, help="Markdown around the tables ({{TABLES}} marks where they go)")
    args = parser.parse_args(argv)
    suite = default_suite(args.output_dir)
    if args.command == "list":
        print("\n".join(row.name for row in suite.rows))
    elif args.command == "run":
        names = args.rows.split(",") if args.rows else None
        seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
        failed = run_rows(suite, names, seeds)
        print(f"[quality] done; failed cells: {failed or 'none'}", flush=True)
    else:
        table = markdown_table(suite) + "\n\nPretraining runs:\n\n" + pretraining_table(suite)
        print(table)
        if args.write_results:
            notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
            replace_section(args.write_results, notes.replace("{{TABLES}}", table) if notes else table)


if __name__ == "__main__":
    main()
