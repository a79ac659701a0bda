"""Serving latency of FLIP_ID: ONNX Runtime vs PyTorch eager vs the bare DCNv2, side by side in one run (issue 16).

    python -m training.finetune training/configs/finetune_demo.yaml --ctr_mode id --backbone dcnv2 \
        --num_train_epochs 2 --output_dir outputs/serving/flip_id          # ~1.5 min on 2 cores
    python benchmarks/serving_onnx.py --model outputs/serving/flip_id --threads 1 --output benchmarks/RESULTS.md

For every batch size (default 1, 64, 1024, 4096), contenders run in interleaved rounds on rows of the ML-100k test
split (time-ordered, 10,000 rows; batches cycle through it):

- model only, on field ids encoded beforehand: FLIP_ID on ONNX Runtime (`ORTFlipForCTR.__call__`, range checks
  included), FLIP_ID in PyTorch eager (`FlipForCTR`), the bare DCNv2 in PyTorch eager (the same weights without
  FLIP's classes, `throughput.BareBackbone`);
- end to end from raw rows (a dict of string columns, as a JSON request gives): encoding with the schema (no
  tokenizer) + model + sigmoid, on ONNX Runtime (`ORTFlipForCTR.predict`) and in PyTorch (`score_exported`).

Each call is timed alone (`time.perf_counter`): rows/s = rows / summed call time; p50 / p99 of the per-call latency
over all rounds; rows per CPU-second (`time.process_time`, robust to other processes on a shared CPU). The ONNX
folder is exported into a temporary folder unless `--onnx` names one; parity on the whole test split is reported.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # `python benchmarks/serving_onnx.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from throughput import bare_copy, hardware, load_average, replace_section  # noqa: E402

from modeling_flip import FlipForCTR  # noqa: E402
from processing.datasets import load_ctr_dataset  # noqa: E402
from processing.onnx_serving import ORTFlipForCTR  # noqa: E402
from processing.schema import TabularSchema  # noqa: E402
from training.export import load_exported_id, score_exported  # noqa: E402
from training.onnx_export import export_onnx  # noqa: E402

SECTION_KEY = "serving-onnx"
MODEL_ONLY = ("FLIP_ID, ONNX Runtime", "FLIP_ID, PyTorch eager", "bare DCNv2, PyTorch eager")
END_TO_END = ("raw rows -> FLIP_ID, ONNX Runtime", "raw rows -> FLIP_ID, PyTorch eager")


def column_batches(columns: dict[str, list], batch_size: int, count: int) -> list[dict[str, list]]:
    """`count` consecutive batches of `batch_size` rows (dicts of columns), wrapping around the table."""
    rows = len(next(iter(columns.values())))
    starts = [(i * batch_size) % rows for i in range(count)]
    index = [np.arange(start, start + batch_size) % rows for start in starts]
    return [{name: [values[i] for i in rows_index] for name, values in columns.items()} for rows_index in index]


@dataclass
class Models:
    """The contenders' models: FLIP_ID (PyTorch) with its schema, the bare DCNv2 copy, FLIP_ID on ONNX Runtime."""

    flip_id: FlipForCTR
    schema: TabularSchema
    bare: torch.nn.Module
    ort: ORTFlipForCTR

    @classmethod
    def load(cls, folder: str, onnx_folder: str, threads: int) -> Models:
        flip_id, schema = load_exported_id(folder)
        return cls(
            flip_id, schema, bare_copy(flip_id).eval(), ORTFlipForCTR.from_pretrained(onnx_folder, threads=threads)
        )


def contenders(models: Models, batches: list[dict[str, list]]) -> dict[str, Callable[[int], Any]]:
    """Name -> a function scoring batch `i` (`fn(i)`), for the model-only and end-to-end contenders."""
    ids = [models.ort.encode(batch) for batch in batches]  # (B, F) int64 each
    tensors = [torch.from_numpy(batch_ids) for batch_ids in ids]
    runs = [
        lambda i: models.ort(ids[i]),
        lambda i: models.flip_id(field_ids=tensors[i]).logits,
        lambda i: models.bare(tensors[i]),
        lambda i: models.ort.predict(batches[i]),
        lambda i: score_exported(models.flip_id, models.schema, batches[i]),
    ]
    return dict(zip(MODEL_ONLY + END_TO_END, runs))


@torch.inference_mode()
def time_calls(runs: dict[str, Callable], num_batches: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per name: the wall seconds of every call and the CPU seconds of every round. Rounds rotate the order; each
    round calls every name once per batch, after one untimed warm-up call."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    names = list(runs)
    for name in names:
        runs[name](0)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            cpu_start = time.process_time()
            for i in range(num_batches):
                start = time.perf_counter()
                runs[name](i)
                times[name]["wall"].append(time.perf_counter() - start)
            times[name]["cpu"].append(time.process_time() - cpu_start)
    return times


def latency_stats(times: dict[str, list[float]], batch_size: int) -> dict[str, float]:
    """rows/s (wall and CPU time), p50 / p99 call latency in ms, number of calls."""
    wall = np.asarray(times["wall"])
    rows = batch_size * len(wall)
    return {
        "rows_per_s": rows / wall.sum(),
        "rows_per_cpu_s": rows / max(sum(times["cpu"]), 1e-9),
        "p50_ms": 1e3 * float(np.percentile(wall, 50)),
        "p99_ms": 1e3 * float(np.percentile(wall, 99)),
        "calls": len(wall),
    }


def calls_for(batch_size: int, rows_budget: int, min_calls: int, max_calls: int) -> int:
    """Calls per contender at `batch_size`: about `rows_budget` rows, within [min_calls, max_calls]."""
    return int(np.clip(rows_budget // batch_size, min_calls, max_calls))


def parity(models: Models, columns: dict[str, list]) -> float:
    """max |ORT probability - PyTorch probability| over the whole table."""
    expected = score_exported(models.flip_id, models.schema, columns).numpy()
    return float(np.abs(models.ort.predict(columns) - expected).max())


def run(args: argparse.Namespace, onnx_folder: str) -> dict[str, Any]:
    """Every batch size's statistics per contender, plus parity and the load averages."""
    models = Models.load(args.model, onnx_folder, args.threads)
    columns = load_ctr_dataset("movielens-100k")["test"].select_columns(models.schema.field_names).to_dict()
    results: dict[str, Any] = {"parity_max_abs_diff": parity(models, columns), "batches": {}}
    results["load_before"] = load_average()
    for batch_size in args.batch_sizes:
        num_batches = calls_for(batch_size, args.rows_budget, args.min_calls, args.max_calls) // args.rounds
        print(f"[serving_onnx] batch {batch_size}: {num_batches} calls x {args.rounds} rounds", file=sys.stderr)
        runs = contenders(models, column_batches(columns, batch_size, num_batches))
        times = time_calls(runs, num_batches, args.rounds)
        results["batches"][batch_size] = {name: latency_stats(t, batch_size) for name, t in times.items()}
    results["load_after"] = load_average()
    return results


def markdown(results: dict[str, Any], meta: dict[str, str]) -> str:
    """The results as a RESULTS.md section: context, one table, ORT / eager ratios."""
    lines = [
        f"### Serving FLIP_ID: ONNX Runtime vs PyTorch eager, CPU fp32, {meta['threads']} thread(s)",
        "",
        f"- date: {meta['date']}; hardware: {meta['hardware']}; onnxruntime {meta['onnxruntime']}",
        f"- load average (1/5/15 min) before / after: {results['load_before']} / {results['load_after']}",
        f"- command: `{meta['command']}`",
        f"- model: {meta['model']}",
        f"- ORT vs PyTorch click probabilities, all test rows: max abs diff {results['parity_max_abs_diff']:.2e}",
        "- rows/s = rows / summed call time; p50 / p99 of single calls; contenders interleaved, 1 warm-up call each",
        "",
        "| batch | contender | rows/s | rows per CPU-s | p50 ms | p99 ms | calls | rows/s vs FLIP_ID eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch_size, stats in results["batches"].items():
        for name, row in stats.items():
            reference = stats[MODEL_ONLY[1] if name in MODEL_ONLY else END_TO_END[1]]["rows_per_s"]
            lines.append(
                f"| {batch_size} | {name} | {row['rows_per_s']:,.0f} | {row['rows_per_cpu_s']:,.0f} | "
                f"{row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['calls']} | {row['rows_per_s'] / reference:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="finetuned FLIP_ID folder (ctr_mode=id, DCNv2 backbone)")
    parser.add_argument("--onnx", default=None, help="its `flip export-onnx` folder (default: exported here)")
    parser.add_argument(
        "--batch_sizes", type=lambda text: [int(b) for b in text.split(",")], default=[1, 64, 1024, 4096]
    )
    parser.add_argument("--rows_budget", type=int, default=80_000, help="rows per contender and batch size")
    parser.add_argument("--min_calls", type=int, default=32)
    parser.add_argument("--max_calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (calls are split among them)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and ONNX Runtime")
    parser.add_argument("--output", default=None, help="Markdown file whose serving-onnx section is replaced")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    with tempfile.TemporaryDirectory() as scratch:
        onnx_folder = args.onnx or f"{scratch}/onnx"
        if not args.onnx:
            export_onnx(args.model, onnx_folder)
        results = run(args, onnx_folder)
    meta = {
        "threads": str(args.threads),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(torch.device("cpu")),
        "onnxruntime": onnxruntime.__version__,
        "command": "python benchmarks/serving_onnx.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
    }
    text = markdown(results, meta)
    print(text)
    if args.output:
        replace_section(args.output, text, SECTION_KEY)
    return results


if __name__ == "__main__":
    main()
