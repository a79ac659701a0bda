"""Memory allocators for CPU training: the FLIP pretraining step under glibc malloc, jemalloc and tcmalloc.

    python benchmarks/allocators.py --text_model outputs/quality/text_models/model-L2 --batch_size 256 \
        --output benchmarks/RESULTS.md

The allocator is chosen when a process starts (`LD_PRELOAD`), so each contender is a child process (this script with
`--child`) that times `throughput.py`'s FLIP pretraining step alone (the same step, batches and timing as the
throughput benchmark, start-up and warm-up excluded). The children run in interleaved rounds (rotating order); a
round's ratios compare its children with that round's glibc child. On glibc, tensors over the mmap threshold (32 MiB
at most: the MLM logits, the word-embedding gradient) are mapped and unmapped at every step, and every fresh page is
zeroed by the kernel; an allocator that keeps freed memory avoids both.
The numerics do not change (only where tensors live).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


@dataclass(frozen=True)
class Allocator:
    """A contender: the shared library to preload (none: glibc malloc) and its environment settings."""

    name: str
    library: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, library_path: str | None) -> dict[str, str]:
        preload = {"LD_PRELOAD": library_path} if library_path else {}
        return {**os.environ, "OMP_NUM_THREADS": "1", **preload, **self.env}


GLIBC = Allocator("glibc malloc (default)")
ALLOCATORS = (
    GLIBC,
    Allocator("jemalloc (default decay)", "libjemalloc.so.2"),
    Allocator(
        "jemalloc, freed pages kept", "libjemalloc.so.2", {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    ),
    Allocator("tcmalloc (minimal)", "libtcmalloc_minimal.so.4"),
)


def find_library(name: str) -> str | None:
    """The path of a shared library in the usual system folders (Debian: libjemalloc2, libtcmalloc-minimal4)."""
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).exists()), None)


def flip_step_rates(throughput_args: list[str]) -> dict[str, float]:
    """In this process (the child): the FLIP pretraining step of `throughput.py` alone, start-up and warm-up
    excluded; samples per wall second and per CPU second (medians over `--repeats` timed blocks of `--steps`)."""
    args = throughput.build_parser().parse_args(throughput_args)
    setup = throughput.make_setup(args)
    variant = next(v for v in throughput.pretraining_variants(setup, False) if v.name == "FLIP")
    num_batches = args.steps * (args.repeats + 1)
    trainee = throughput.build_trainee(setup, variant, args.batch_size, num_batches, args.pad_length)
    trainee.step(args.warmup)
    rates = throughput.interleaved_rates({"FLIP": lambda: trainee.step(args.steps)}, args.repeats, setup.synchronize)
    return {clock: throughput.summary(values)["median"] for clock, values in rates["FLIP"].items()}


def child_rates(allocator: Allocator, library_path: str | None, throughput_args: list[str]) -> dict[str, float]:
    """Run `flip_step_rates` in a child process started with `allocator`; its last stdout line is the JSON."""
    argv = [sys.executable, __file__, "--child", *throughput_args]
    done = subprocess.run(argv, env=allocator.environment(library_path), check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(allocators: list[tuple[Allocator, str | None]], rounds: int, throughput_args: list[str]) -> dict:
    """Per allocator: per-round rates and ratios to the same round's glibc child."""
    rates: dict[str, dict[str, list[float]]] = {a.name: {"wall": [], "cpu": []} for a, _ in allocators}
    for round_index in range(rounds):
        shift = round_index % len(allocators)
        for allocator, library_path in allocators[shift:] + allocators[:shift]:
            print(f"[allocators] round {round_index + 1}: {allocator.name}", file=sys.stderr, flush=True)
            for clock, rate in child_rates(allocator, library_path, throughput_args).items():
                rates[allocator.name][clock].append(rate)
    return throughput.compare(rates, {"glibc": GLIBC.name})


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "### CPU fp32: memory allocators for the FLIP pretraining step",
        "",
        f"- date: {meta['date']}; hardware: {meta['hardware']}; torch threads 1 per process",
        f"- load average (1/5/15 min) before / after: {meta['load_before']} / {meta['load_after']}",
        f"- command: `{meta['command']}`",
        f"- {meta['rounds']} interleaved rounds, one child process per allocator per round (FLIP step only, "
        "start-up and warm-up excluded); median [min, max] over rounds; ratios are to the same round's glibc "
        "child. Not found here: " + (", ".join(meta["missing"]) or "none"),
        "",
        "| allocator | samples/s | vs glibc | samples per CPU-s | vs glibc (CPU time) |",
        "|---|---|---|---|---|",
    ]
    fmt = throughput._fmt  # "median [min, max]"
    for name, stats in results.items():
        lines.append(
            f"| {name} | {fmt(stats['wall'], 1)} | {fmt(stats['vs_glibc_wall'], 2)} | {fmt(stats['cpu'], 1)} | "
            f"{fmt(stats['vs_glibc_cpu'], 2)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None, help="Markdown file whose allocator section is replaced")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, throughput_args = parser.parse_known_args(argv)
    if args.child:
        print(json.dumps(flip_step_rates(throughput_args)))
        return {}
    throughput_args = ["--threads", "1", *throughput_args]
    allocators = [(a, find_library(a.library) if a.library else None) for a in ALLOCATORS]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": throughput.hardware(torch.device("cpu")),
        "load_before": throughput.load_average(),
        "rounds": args.rounds,
        "missing": [a.library for a, path in allocators if a.library and not path],
        "command": "python benchmarks/allocators.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    available = [(a, path) for a, path in allocators if a.library is None or path]
    results = measure(available, args.rounds, throughput_args)
    meta["load_after"] = throughput.load_average()
    body = markdown(results, meta)
    print(body)
    if args.output:
        throughput.replace_section(args.output, body, "cpu-allocators")
    return results


if __name__ == "__main__":
    main()
