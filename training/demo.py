"""`flip demo`: the README's end-to-end run on movielens-100k with the bundled MiniLM, offline except pip: prepare
the data, DCNv2 from scratch, FLIP pretraining (bounded: 200 steps or 3.5 minutes), FLIP_ID (ID tower from the
pretraining checkpoint), FLIP (joint; bounded: 120 steps or 2 minutes); prints and writes the test table (AUC,
LogLoss, RelaImpr vs DCNv2, training rows seen, wall time). Sized for under 15 minutes on 2 free CPU cores (fp32:
bf16 autocast is emulated, 8x slower, on CPUs without AVX512-BF16 / AMX; benchmarks/RESULTS.md). On CPU the joint
model sees only a few thousand rows: its RelaImpr cell says it is budget-bound, its row shows the pipeline, not FLIP's
quality. `--full` runs the full protocol instead (GPU: 30 pretraining epochs, bf16, complete test split).

    flip demo                                  # CPU, outputs/demo
    flip demo --full --output_dir outputs/full # GPU (accelerate launch -m training.demo --full for several GPUs)

The final FLIP model (`OUTPUT_DIR/flip`) loads with `AutoModel.from_pretrained(dir, trust_remote_code=True)`.
"""

import os
import time
from pathlib import Path

from accelerate import PartialState
from transformers import AutoModel

from processing.atomic_io import write_json

from . import finetune, pretrain
from .arguments import command_parser, make_parser, parse_args
from .ctr_metrics import rela_impr
from .data import prepared_dir
from .run_output import hardware_description

CONFIGS = Path(__file__).parent / "configs"
# FLIP (joint): MiniLM at 5e-5, the rest at the ID learning rate; on CPU the steps and the wall time are bounded,
# and alpha starts at 0.5: from the reference's 0 (the text logit alone) Adam moves it only ~1e-3 per step
# (benchmarks/RESULTS.md, 300 steps: +0.02 validation AUC, +0.03 test AUC over 3 seeds).
JOINT_ARGS = {
    "demo": "--learning_rate 1e-3 --text_learning_rate 5e-5 --per_device_train_batch_size 32 "
    "--per_device_eval_batch_size 128 --max_steps 120 --max_train_minutes 2 --eval_strategy steps --eval_steps 40 "
    "--save_strategy steps --save_steps 40 --max_eval_samples 1000 --logging_steps 10 --joint_alpha_init 0.5",
    "full": "--learning_rate 1e-3 --text_learning_rate 5e-5 --per_device_train_batch_size 128 "
    "--per_device_eval_batch_size 512 --num_train_epochs 5",
}
BASELINE = "DCNv2"
BUDGET_BOUND_SHARE = 0.1  # a model that saw fewer training rows than this share of DCNv2's is flagged in the table


def run_stages(preset: str, output_dir: str, data_dir: str | None, seed: int) -> list[dict]:
    """Prepare, DCNv2, pretrain, FLIP_ID, FLIP; one record per stage (results of the scripts + wall time)."""
    pretrain_config, finetune_config = (
        str(CONFIGS / f"pretrain_{preset}.yaml"),
        str(CONFIGS / f"finetune_{preset}.yaml"),
    )
    shared = ["--seed", str(seed)] + (["--data_dir", data_dir] if data_dir else [])
    out = {name: os.path.join(output_dir, name) for name in ("pretrain", "flip_id", "flip", "dcnv2")}
    model_args, data_args, *_ = parse_args(
        make_parser(pretrain.ARGUMENT_CLASSES, "demo", None), [pretrain_config, *shared]
    )
    start = time.time()
    prepared_dir(model_args, data_args)
    records = [{"stage": "prepare", "wall_time_s": round(time.time() - start, 1)}]
    stages = [
        (
            BASELINE,
            finetune,
            [finetune_config, "--ctr_mode", "id", "--backbone", "dcnv2", "--output_dir", out["dcnv2"]],
        ),
        ("FLIP pretraining", pretrain, [pretrain_config, "--output_dir", out["pretrain"]]),
        (
            "FLIP_ID",
            finetune,
            [finetune_config, "--init_from", out["pretrain"], "--ctr_mode", "id", "--output_dir", out["flip_id"]],
        ),
        (
            "FLIP",
            finetune,
            [
                finetune_config,
                "--init_from",
                out["pretrain"],
                "--ctr_mode",
                "joint",
                "--output_dir",
                out["flip"],
                *JOINT_ARGS[preset].split(),
            ],
        ),
    ]
    for name, script, argv in stages:
        records.append({**script.main(argv + shared), "stage": name})
    return records


def results_table(records: list[dict]) -> tuple[list[dict], str]:
    """Rows (model, training rows seen, test AUC / LogLoss, RelaImpr vs DCNv2, wall time) and a Markdown table. A
    model that saw under `BUDGET_BOUND_SHARE` of DCNv2's training rows says so in its RelaImpr cell: on the CPU budget
    the joint model's row shows that the pipeline runs, not FLIP's quality."""
    finetuned = [record for record in records if "test" in record]
    base = next(record for record in finetuned if record["stage"] == BASELINE)
    rows = [
        {
            "model": record["stage"],
            "train_rows_seen": record["train_rows_seen"],
            "test_auc": round(record["test"]["test_auc"], 4),
            "test_logloss": round(record["test"]["test_logloss"], 4),
            "rela_impr_vs_dcnv2_pct": round(rela_impr(record["test"]["test_auc"], base["test"]["test_auc"]), 2),
            "share_of_dcnv2_rows": round(record["train_rows_seen"] / max(base["train_rows_seen"], 1), 4),
            "wall_time_s": record["wall_time_s"],
        }
        for record in finetuned
    ]
    header = "| model | training rows seen | test AUC | test LogLoss | RelaImpr vs DCNv2 | wall time (s) |"
    lines = [header, "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['model']} | {r['train_rows_seen']:,} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} | "
        f"{rela_impr_cell(r)} | {r['wall_time_s']:.0f} |"
        for r in rows
    ]
    return rows, "\n".join(lines)


def rela_impr_cell(row: dict) -> str:
    """`+0.12%`, or for a budget-bound model `-42.00% (budget-bound: 0.8% of DCNv2's training rows)`."""
    cell = f"{row['rela_impr_vs_dcnv2_pct']:+.2f}%"
    if row["share_of_dcnv2_rows"] < BUDGET_BOUND_SHARE:
        cell += f" (budget-bound: {row['share_of_dcnv2_rows']:.1%} of DCNv2's training rows)"
    return cell


def main(argv: list[str] | None = None, prog: str = "python -m training.demo") -> dict:
    parser = command_parser(prog, __doc__)
    parser.add_argument("--output_dir", default="outputs/demo", help="one sub-folder per model + the result table")
    parser.add_argument("--full", action="store_true", help="full-data GPU protocol instead of the CPU budget")
    parser.add_argument("--data_dir", default=None, help="prepared-data cache (default: ./data)")
    parser.add_argument("--seed", type=int, default=42, help="seed of every stage")
    args = parser.parse_args(argv)
    start = time.time()
    records = run_stages("full" if args.full else "demo", args.output_dir, args.data_dir, args.seed)
    rows, markdown = results_table(records)
    flip_dir = os.path.join(args.output_dir, "flip")
    loaded = type(AutoModel.from_pretrained(flip_dir, trust_remote_code=True)).__name__
    summary = {
        "preset": "full" if args.full else "demo",
        "hardware": hardware_description(),
        "total_wall_time_s": round(time.time() - start, 1),
        "rows": rows,
        "stages": [{"stage": r["stage"], "wall_time_s": r["wall_time_s"]} for r in records],
        "final_model": flip_dir,
        "final_model_loads_as": loaded,
    }
    test_rows = next(record["test_rows"] for record in records if "test_rows" in record)
    note = (
        f"movielens-100k, first {test_rows:,} rows of the time-ordered test split; {summary['hardware']}; "
        f"total {summary['total_wall_time_s']:.0f} s"
    )
    if PartialState().is_main_process:  # `accelerate launch -m training.demo --full` runs every stage on N GPUs
        write_json(os.path.join(args.output_dir, "demo_results.json"), summary)
        Path(args.output_dir, "demo_results.md").write_text(f"{markdown}\n\n{note}\n", encoding="utf-8")
        print(f"\n{markdown}\n\n{note}\nFinal FLIP model: {flip_dir} (AutoModel -> {loaded})")
    return summary


if __name__ == "__main__":
    main()
