"""Throughput of FLIP on real ML-100k prompts (PROTOCOL.md "Throughput benchmarks"), as side-by-side ratios.

    python benchmarks/throughput.py --device cpu --batch_size 32 --steps 3 --repeats 5 --output benchmarks/RESULTS.md
    python benchmarks/throughput.py --device cuda --dtype bf16 --bundle benchmarks/.cache/bundle \
        --text_model bert-base-random --batch_size 128

Sections (`--sections`, default all):
- `pretrain`: samples/s of one optimizer step (AdamW) of FLIP pretraining (ICL + MLM + MTM, two text passes) vs a
  plain `transformers` masked-LM step of the same encoder on inputs padded to `--pad_length` with 15% random-token
  masking; plus one FLIP variant per lever (masked-only logits, dynamic padding, length grouping, SDPA, bf16
  autocast, fused AdamW, torch.compile), each differing from the FLIP row in that lever only. Contenders are run
  in interleaved rounds; medians and [min, max] over rounds; ratios are taken within each round.
- `memory`: peak memory of the plain step and FLIP (CUDA: `torch.cuda.max_memory_allocated`; CPU: each contender
  in a fresh subprocess, its `VmHWM` during the steps, reset after loading).
- `preprocess`: processor rows/s through `datasets.map` (the library's `encode_splits`) over all of ML-100k and
  over a synthetic 1M-row ML-1M-sized table (CPU only; needs `datasets`).
- `serving`: rows/s of FLIP_ID vs the bare backbone, and of FLIP joint vs PLM-only + ID-only run one after the other.
- `lengths`: the prompt token-length distribution.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # `python benchmarks/throughput.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_data import CACHE, BenchData, load_data  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, BertConfig, DataCollatorForLanguageModeling  # noqa: E402
from transformers.trainer_pt_utils import get_length_grouped_indices  # noqa: E402

from modeling_flip import FlipConfig, FlipForCTR, FlipForPretraining  # noqa: E402
from modeling_flip.tabular_backbones import build_backbone  # noqa: E402
from processing.atomic_io import replace_marked_section, write_json  # noqa: E402
from processing.collators import DataCollatorForCTR, DataCollatorForFlipPretraining  # noqa: E402
from training.run_output import cpu_bf16_unit  # noqa: E402

SECTIONS = ("lengths", "pretrain", "memory", "serving", "preprocess")
RANDOM_TEXT_CONFIGS = {  # random-init BERT encoders (MiniLM's vocabulary) for shapes without a checkpoint
    "bert-base-random": {},
    "bert-tiny-random": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every section shares: device, autocast dtype, the data and the text encoder's local path."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None = fp32
    data: BenchData | None  # None in a memory probe (it gets pre-collated batches)
    text_model_path: str
    flip_kwargs: dict[str, Any]  # FlipConfig fields from the schema
    feature_counts: list[int]  # MTM noise distribution
    seed: int = 0

    def autocast(self, enabled: bool = True):
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=enabled and bool(self.dtype)
        )

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def text_model_path(name: str, data: BenchData) -> str:
    """A local folder for `--text_model`: the data's own encoder (`minilm`), a random-init BERT of a named size
    (saved once under `benchmarks/.cache/`, MiniLM's tokenizer), or any path / Hub id unchanged."""
    if name == "minilm":
        return data.text_model_path
    if name not in RANDOM_TEXT_CONFIGS:
        return name
    folder = CACHE / name
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=data.processor.tokenizer.vocab_size, **RANDOM_TEXT_CONFIGS[name])
        AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(str(folder))
    return str(folder)


def flip_kwargs(data: BenchData) -> dict[str, Any]:
    """FlipConfig fields from the data's schema."""
    schema = data.processor.schema
    return {"field_names": schema.field_names, "field_vocab_sizes": schema.field_vocab_sizes}


def hardware(device: torch.device) -> str:
    """GPU name, or CPU model + cores; with the torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        models = (
            [
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ]
            if Path("/proc/cpuinfo").exists()
            else [platform.processor()]
        )
        unit = cpu_bf16_unit()
        name = f"{models[0] if models else platform.machine()}{f' with {unit}' if unit else ''}"
        name += f", {os.cpu_count()} cores"
    return f"{name}; torch {torch.__version__}"


def load_average() -> str:
    """1/5/15-minute load averages (other processes share the machine)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


def interleaved_rates(
    runs: dict[str, Callable[[], int]], repeats: int, synchronize: Callable[[], None]
) -> dict[str, dict[str, list[float]]]:
    """Call every run once per round, in rotating order, `repeats` rounds; each call returns the samples it
    processed. Returns, per name, samples per wall-clock second (`"wall"`) and per CPU second of this process, all
    threads together (`"cpu"`: robust to other processes' load on a shared CPU; host time only on a GPU). Round r
    of every name comes from the same round."""
    rates: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    names = list(runs)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            samples = runs[name]()
            synchronize()
            rates[name]["wall"].append(samples / (time.perf_counter() - start))
            rates[name]["cpu"].append(samples / max(time.process_time() - cpu_start, 1e-9))
    return rates


def compare(rates: dict[str, dict[str, list[float]]], references: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Summaries of every name's rates and of its per-round ratios to each reference (`{"plain": name, ...}`)."""
    out = {}
    for name, clocks in rates.items():
        out[name] = {clock: summary(values) for clock, values in clocks.items()}
        for label, reference in references.items():
            for clock in clocks:
                out[name][f"vs_{label}_{clock}"] = ratio_summary(clocks[clock], rates[reference][clock])
    return out


def summary(values: list[float]) -> dict[str, float]:
    """Median and [min, max] of per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Per-round ratios (same round = same load), summarised."""
    return summary([a / b for a, b in zip(numerator, denominator)])


def cycle(batches: list[Any]) -> Iterator[Any]:
    while True:
        yield from batches


# ----------------------------------------------------------------------------------------------------------------
# Pretraining step: FLIP (and its levers) vs a plain padded masked-LM step
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One pretraining configuration. The defaults are the FLIP row; each lever flips one field."""

    name: str = "FLIP"
    plain_mlm: bool = False  # transformers AutoModelForMaskedLM, pad to pad_length, 15% random tokens
    group_by_length: bool = False  # batches drawn like Trainer(train_sampling_strategy="group_by_length")
    pad_length: int | None = None  # None: dynamic padding (to a multiple of 8); else pad every batch to this
    full_logits: bool = False  # MLM logits at every position (then select the masked ones)
    attn: str = "sdpa"
    autocast: bool = True  # only matters with --dtype bf16
    fused_adamw: bool = False
    compile: bool = False


class FullLogitsFlipForPretraining(FlipForPretraining):
    """Lever "masked-only MLM logits" turned off: decoder logits for all B x L positions, then the masked ones."""

    def _mlm_loss(self, masked_input_ids, attention_mask, mlm_labels, tabular_hidden):
        states = self.flip.encode_text(masked_input_ids, attention_mask)[0]  # (B, L, D)
        rows = tabular_hidden[:, None, :].expand(-1, states.shape[1], -1)  # (B, L, H)
        word_embeddings = self.flip.text_model.get_input_embeddings().weight
        logits = self.mlm_head(states, rows, word_embeddings)  # (B, L, V_tok)
        selected = mlm_labels != -100
        loss = nn.functional.cross_entropy(logits[selected], mlm_labels[selected])
        return loss, None


def pretraining_variants(setup: Setup, compile_text: bool) -> list[Variant]:
    """The plain reference, the FLIP row and one variant per lever relevant on this device."""
    base = Variant(fused_adamw=setup.device.type == "cuda")
    variants = [
        replace(base, name="plain MLM, padded", plain_mlm=True),
        base,
        replace(base, name="FLIP + length-grouped batches", group_by_length=True),
        replace(base, name="FLIP - masked-only logits (full logits)", full_logits=True),
        replace(base, name="FLIP - dynamic padding (pad to max)", pad_length=-1),
        replace(base, name="FLIP - SDPA (eager attention)", attn="eager"),
    ]
    if setup.dtype is not None:
        variants.append(replace(base, name="FLIP - bf16 autocast (fp32)", autocast=False))
    if setup.device.type == "cuda":
        variants.append(replace(base, name="FLIP - fused AdamW (foreach)", fused_adamw=False))
    if compile_text:
        variants.append(replace(base, name="FLIP + torch.compile(text encoder)", compile=True))
    return variants


def build_pretraining_model(setup: Setup, variant: Variant) -> nn.Module:
    """FlipForPretraining (or the plain masked LM) around the same encoder weights, on the device, train mode."""
    torch.manual_seed(setup.seed)
    text_kwargs = {"attn_implementation": variant.attn, "dtype": torch.float32}
    if variant.plain_mlm:
        model = AutoModelForMaskedLM.from_pretrained(setup.text_model_path, **text_kwargs)
    else:
        model_class = FullLogitsFlipForPretraining if variant.full_logits else FlipForPretraining
        model = model_class.from_text_pretrained(
            setup.text_model_path, text_model_kwargs=text_kwargs, **setup.flip_kwargs
        )
        model.set_feature_frequencies(setup.feature_counts)
    model.to(setup.device).train()
    if variant.compile:
        compile_text_encoder(model)
    return model


def compile_text_encoder(model: nn.Module) -> None:
    """`torch.compile` the text encoder in place (`nn.Module.compile`, keeps parameter names)."""
    model.flip.text_model.compile(dynamic=True)


def batch_indices(data: BenchData, batch_size: int, steps: int, grouped: bool, seed: int) -> list[list[int]]:
    """Row indices of `steps` batches of train rows: random, or length-grouped as the Trainer's sampler does."""
    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = get_length_grouped_indices(data.lengths().tolist(), batch_size, generator=generator)
    else:
        order = torch.randperm(len(data.splits["train"]), generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    # a random sample of the epoch's batches: grouped epochs start with their longest batches (the sampler puts
    # the longest first and sorts each mega-batch), so the first few would not be representative
    picks = torch.randperm(len(batches), generator=generator)[:steps].tolist()
    return [batches[i] for i in picks]


def collate_pretraining(setup: Setup, variant: Variant, indices: list[list[int]], pad_length: int) -> list[dict]:
    """Pre-collated batches on the device (collation is not timed: both pipelines collate on the host)."""
    rows = setup.data.splits["train"]
    tokenizer = setup.data.processor.tokenizer
    if variant.plain_mlm:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=setup.seed)
        make = lambda batch: collator(  # noqa: E731
            [tokenizer.pad(_text_only(rows[i]), padding="max_length", max_length=pad_length) for i in batch]
        )
    else:
        pad_to = 8 if variant.pad_length is None else pad_length
        collator = DataCollatorForFlipPretraining(tokenizer, seed=setup.seed, pad_to_multiple_of=pad_to)
        make = lambda batch: collator([rows[i] for i in batch])  # noqa: E731
    return [{key: value.to(setup.device) for key, value in make(batch).items()} for batch in indices]


def _text_only(row: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]}


@dataclass
class Trainee:
    """A model, its AdamW and its batches: `step(n)` runs n optimizer steps and returns the samples seen."""

    setup: Setup
    variant: Variant
    model: nn.Module
    batches: Iterator[dict[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = {"fused": True} if self.variant.fused_adamw else {"foreach": True}
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, **fused)

    def step(self, steps: int) -> int:
        samples = 0
        for _ in range(steps):
            batch = next(self.batches)
            with self.setup.autocast(self.variant.autocast):
                loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            samples += len(batch["input_ids"])
        return samples


def build_trainee(setup: Setup, variant: Variant, batch_size: int, num_batches: int, pad_length: int) -> Trainee:
    """Model + optimizer + pre-collated batches (fixed seed: every variant sees the same rows unless grouped)."""
    indices = batch_indices(setup.data, batch_size, num_batches, variant.group_by_length, setup.seed)
    batches = collate_pretraining(setup, variant, indices, pad_length)
    try:
        model = build_pretraining_model(setup, variant)
    except Exception as error:  # e.g. torch.compile unavailable: fall back to eager, say so
        if not variant.compile:
            raise
        print(f"torch.compile failed ({error!r}); measuring eager instead", file=sys.stderr)
        model = build_pretraining_model(setup, replace(variant, compile=False))
    return Trainee(setup, variant, model, cycle(batches))


def bench_pretraining(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """samples/s per variant (interleaved rounds), ratios to the plain padded step, and the mean padded width."""
    variants = pretraining_variants(setup, args.compile)
    if args.variants:  # the plain reference and the FLIP row always run: ratios are taken against them
        wanted = {variants[0].name, "FLIP", *args.variants.split(",")}
        variants = [v for v in variants if v.name in wanted]
    num_batches = args.steps * (args.repeats + 1)
    trainees = {v.name: build_trainee(setup, v, args.batch_size, num_batches, args.pad_length) for v in variants}
    for name, trainee in list(trainees.items()):  # warm-up: allocator, optimizer states, compilation
        try:
            trainee.step(args.warmup)
        except Exception as error:  # torch.compile fails at the first call, not at build: fall back to eager
            if not trainee.variant.compile:
                raise
            print(f"torch.compile failed ({error!r}); measuring eager instead", file=sys.stderr)
            del trainees[name]
            eager = replace(trainee.variant, name=f"{name} (FAILED: eager)", compile=False)
            trainees[eager.name] = build_trainee(setup, eager, args.batch_size, num_batches, args.pad_length)
            trainees[eager.name].step(args.warmup)
    runs = {name: (lambda t=trainee: t.step(args.steps)) for name, trainee in trainees.items()}
    rates = interleaved_rates(runs, args.repeats, setup.synchronize)
    return compare(rates, {"plain": variants[0].name, "flip": "FLIP"})


# ----------------------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------------------


def peak_memory(setup: Setup, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Peak memory (MiB) of a few steps of the plain step and of FLIP (+ length grouping)."""
    names = ["plain MLM, padded", "FLIP", "FLIP + length-grouped batches"]
    variants = [v for v in pretraining_variants(setup, False) if v.name in names]
    if setup.device.type == "cuda":
        return {v.name: cuda_peak(setup, v, args) for v in variants}
    return {v.name: cpu_peak_subprocess(setup, v, args) for v in variants}


def cuda_peak(setup: Setup, variant: Variant, args: argparse.Namespace) -> dict[str, float]:
    """max_memory_allocated over warm-up + steps of one variant, alone on the device (MiB)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    trainee = build_trainee(setup, variant, args.batch_size, args.warmup + args.steps, args.pad_length)
    trainee.step(args.warmup + args.steps)
    peak = torch.cuda.max_memory_allocated() - before
    del trainee
    torch.cuda.empty_cache()
    return {"peak_mib": peak / 2**20, "method": "torch.cuda.max_memory_allocated"}


def cpu_peak_subprocess(setup: Setup, variant: Variant, args: argparse.Namespace) -> dict[str, float]:
    """Run the variant in a fresh interpreter that loads only the model and pre-collated batches (saved to a
    temporary file here), so that its ru_maxrss is the model's and the steps', not this process's data."""
    steps = args.warmup + args.steps
    indices = batch_indices(setup.data, args.batch_size, steps, variant.group_by_length, setup.seed)
    probe = {
        "variant": asdict(variant),
        "batches": collate_pretraining(setup, variant, indices, args.pad_length),
        "text_model_path": setup.text_model_path,
        "flip_kwargs": setup.flip_kwargs,
        "feature_counts": setup.feature_counts,
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.pt")
        torch.save(probe, path)
        argv = [sys.executable, str(Path(__file__).resolve()), "--memory_probe", path]
        result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_probe(path: str) -> dict[str, float]:
    """In this (fresh) process: ru_maxrss after building the model and after the steps (MiB)."""
    probe = torch.load(path, weights_only=False)
    torch.set_num_threads(probe["threads"])
    setup = Setup(
        torch.device("cpu"), None, None, probe["text_model_path"], probe["flip_kwargs"], probe["feature_counts"]
    )
    variant = Variant(**probe["variant"])
    trainee = Trainee(setup, variant, build_pretraining_model(setup, variant), iter(probe["batches"]))
    model_mib = _proc_status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS: loading is excluded
    trainee.step(len(probe["batches"]))
    return {
        "peak_mib": _proc_status_mib("VmHWM"),
        "model_mib": model_mib,
        "method": "VmHWM of a fresh process during the steps (peak reset after loading)",
    }


def _proc_status_mib(key: str) -> float:
    """A `/proc/self/status` memory field in MiB (Linux; ru_maxrss would include the parent's RSS at fork)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


# ----------------------------------------------------------------------------------------------------------------
# Serving
# ----------------------------------------------------------------------------------------------------------------


class BareBackbone(nn.Module):
    """The same ID model without FLIP: one `nn.Embedding` over offset ids, the first-order term and the backbone
    class of `modeling_flip.tabular_backbones` (weights copied from a FLIP_ID model, so the arithmetic is equal)."""

    def __init__(self, config: FlipConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.num_features, config.embedding_dim)
        self.linear = nn.Embedding(config.num_features, 1)
        self.register_buffer("offsets", torch.tensor(config.field_offsets))
        self.backbone = build_backbone(config)

    def forward(self, field_ids: torch.Tensor) -> torch.Tensor:
        ids = field_ids + self.offsets
        return self.backbone(self.embeddings(ids))[1] + self.linear(ids).sum(dim=(1, 2))


def bare_copy(flip_id: FlipForCTR) -> BareBackbone:
    """A `BareBackbone` holding the FLIP_ID model's tabular weights."""
    bare = BareBackbone(flip_id.config)
    bare.load_state_dict(flip_id.flip.tabular_model.state_dict(), strict=False)
    return bare


@torch.inference_mode()
def bench_serving(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """rows/s: FLIP_ID vs the bare backbone (large batches of field ids); FLIP joint vs PLM-only + ID-only."""
    rows = setup.data.splits["train"]
    flip_id = FlipForCTR(
        FlipConfig(text_config=AutoConfig.from_pretrained(setup.text_model_path), **setup.flip_kwargs, ctr_mode="id")
    )
    bare = bare_copy(flip_id)
    id_models = {"FLIP_ID": flip_id, "bare backbone": bare}
    id_batches = [
        DataCollatorForCTR(None, include_text=False)(rows[i : i + args.serving_id_batch_size])["field_ids"]
        for i in range(0, args.serving_id_batch_size * 4, args.serving_id_batch_size)
    ]
    id_batches = [batch.to(setup.device) for batch in id_batches]
    for model in id_models.values():
        model.to(setup.device).eval()
    id_runs = {name: _serve(setup, model, id_batches, field_only=True) for name, model in id_models.items()}
    id_rates = interleaved_rates(id_runs, args.repeats * 4, setup.synchronize)

    text_models = {mode: _ctr_model(setup, mode) for mode in ("joint", "text")}
    collator = DataCollatorForCTR(setup.data.processor.tokenizer)
    size = args.serving_text_batch_size
    text_batches = [
        {k: v.to(setup.device) for k, v in collator(rows[i : i + size]).items() if k != "labels"}
        for i in range(0, size * 2, size)
    ]
    joint = _serve(setup, text_models["joint"], text_batches)
    plm = _serve(setup, text_models["text"], text_batches)
    ident = _serve(setup, flip_id, [b["field_ids"] for b in text_batches], field_only=True)
    separate = lambda: plm() and ident()  # noqa: E731  (the two models one after the other: same rows)
    text_rates = interleaved_rates(
        {"FLIP joint": joint, "PLM-only + ID-only": separate}, args.repeats, setup.synchronize
    )
    return {
        "id": compare(id_rates, {"bare": "bare backbone"}),
        "text": compare(text_rates, {"separate": "PLM-only + ID-only"}),
        "id_batch_size": args.serving_id_batch_size,
        "text_batch_size": size,
    }


def _ctr_model(setup: Setup, mode: str) -> FlipForCTR:
    model = FlipForCTR.from_text_pretrained(
        setup.text_model_path, text_model_kwargs={"dtype": torch.float32}, **setup.flip_kwargs, ctr_mode=mode
    )
    return model.to(setup.device).eval()


def _serve(setup: Setup, model: nn.Module, batches: list, field_only: bool = False) -> Callable[[], int]:
    """A run over `batches` under autocast; returns rows scored."""

    def run() -> int:
        rows = 0
        with setup.autocast():
            for batch in batches:
                output = model(batch) if field_only else model(**batch)
                rows += len(batch if field_only else batch["field_ids"])
                del output
        return rows

    return run


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing and lengths
# ----------------------------------------------------------------------------------------------------------------


# processor variants of the preprocessing section: (label, splice value tokens, datasets.map num_proc)
PREPROCESS_VARIANTS = (
    ("spliced value tokens (default)", True, None),
    ("spliced value tokens, num_proc=2", True, 2),
    ("full-text tokenisation", False, None),
)


def bench_preprocessing(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Processor rows/s through `processing.prepare.encode_splits` (datasets.map, batched) for each of
    `PREPROCESS_VARIANTS` on ML-100k and on a synthetic ML-1M-sized table; a fresh processor copy per run (empty
    value cache). Rows per CPU-second count this process only (not the num_proc workers)."""
    import copy

    import datasets

    from processing.datasets import load_ctr_dataset
    from processing.prepare import encode_splits

    datasets.disable_progress_bars()
    datasets.disable_caching()  # every variant encodes (same processor fingerprint: no reuse of a cached map)
    raw = load_ctr_dataset("movielens-100k")
    full = datasets.concatenate_datasets(list(raw.values()))
    frame = full.to_pandas()
    rng = np.random.default_rng(setup.seed)
    big = frame.iloc[rng.integers(0, len(frame), args.synthetic_rows)].reset_index(drop=True)
    big["user_id"] = rng.integers(1, 6041, len(big)).astype(str)  # ML-1M id ranges
    big["movie_id"] = rng.integers(1, 3953, len(big)).astype(str)
    tables = {"ML-100k (all splits)": full, f"synthetic {len(big):,} rows": datasets.Dataset.from_pandas(big)}
    results = {}
    for table_name, table in tables.items():
        for variant, splice, num_proc in PREPROCESS_VARIANTS:
            processor = copy.deepcopy(setup.data.processor)
            processor.splice_tokens = splice
            start, cpu_start = time.perf_counter(), time.process_time()
            encode_splits(datasets.DatasetDict({"train": table}), processor, num_proc, 1000)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            results[f"{table_name}, {variant}"] = {
                "rows": len(table),
                "seconds": seconds,
                "rows_per_s": len(table) / seconds,
                "rows_per_cpu_s": len(table) / cpu_seconds,
            }
    return results


def length_distribution(data: BenchData) -> dict[str, float]:
    """Token lengths of the train prompts (special tokens included)."""
    lengths = data.lengths()
    return {
        "mean": float(lengths.mean()),
        "p50": float(np.percentile(lengths, 50)),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "rows": len(lengths),
    }


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


_COLUMNS = {clock: ((clock, 1), (f"vs_plain_{clock}", 2), (f"vs_flip_{clock}", 2)) for clock in ("wall", "cpu")}


def _fmt(stats: dict[str, float], digits: int = 1) -> str:
    return f"{stats['median']:,.{digits}f} [{stats['min']:,.{digits}f}, {stats['max']:,.{digits}f}]"


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown section (title, context, one table per section)."""
    meta = results["meta"]
    lines = [
        f"### {meta['device'].upper()} {meta['dtype']}, {meta['text_model']}, batch {meta['batch_size']}",
        "",
        f"- date: {meta['date']}; hardware: {meta['hardware']}; torch threads: {meta.get('threads', '?')}",
        f"- load average (1/5/15 min) before / after: {meta['load_before']} / {meta['load_after']}",
        f"- command: `{meta['command']}`",
        (
            f"- {meta['repeats']} interleaved rounds of {meta['steps']} steps each after {meta['warmup']} warm-up "
            "steps; median [min, max] over rounds; ratios are per round."
        ),
        "",
    ]
    if "lengths" in results:
        t = results["lengths"]
        lines += [
            (
                f"Prompt tokens (train, {t['rows']:,} rows): mean {t['mean']:.1f}, p50 {t['p50']:.0f}, "
                f"p95 {t['p95']:.0f}, max {t['max']}."
            ),
            "",
        ]
    cpu = meta["device"] == "cpu"
    if "pretrain" in results:
        header = "| pretraining step | samples/s | vs plain MLM | vs FLIP |"
        if cpu:
            header += " samples per CPU-s | vs plain (CPU time) | vs FLIP (CPU time) |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name, stats in results["pretrain"].items():
            row = f"| {name} |" + "".join(f" {_fmt(stats[k], d)} |" for k, d in _COLUMNS["wall"])
            if cpu:
                row += "".join(f" {_fmt(stats[k], d)} |" for k, d in _COLUMNS["cpu"])
            lines.append(row)
        lines.append("")
    if "memory" in results:
        lines += ["| peak memory | MiB | method |", "|---|---|---|"]
        for name, stats in results["memory"].items():
            extra = f" (model alone {stats['model_mib']:,.0f})" if "model_mib" in stats else ""
            lines.append(f"| {name} | {stats['peak_mib']:,.0f}{extra} | {stats['method']} |")
        lines.append("")
    if "serving" in results:
        s = results["serving"]
        lines += ["| serving | rows/s | ratio (wall) | ratio (CPU time) |", "|---|---|---|---|"]
        for key, reference, batch in (("id", "bare", s["id_batch_size"]), ("text", "separate", s["text_batch_size"])):
            for name, stats in s[key].items():
                ratio = f"{_fmt(stats[f'vs_{reference}_wall'], 3)} | {_fmt(stats[f'vs_{reference}_cpu'], 3)}"
                lines.append(f"| {name} (batch {batch}) | {_fmt(stats['wall'], 0)} | {ratio} |")
        lines.append("")
    if "preprocess" in results:
        lines += [
            "| preprocessing (datasets.map, batched 1,000) | rows | s | rows/s | rows per CPU-s (main process) |"
        ]
        lines.append("|---|---|---|---|---|")
        for name, stats in results["preprocess"].items():
            per_cpu = f"{stats['rows_per_cpu_s']:,.0f}" if "rows_per_cpu_s" in stats else "-"
            lines.append(
                f"| {name} | {stats['rows']:,} | {stats['seconds']:.1f} | {stats['rows_per_s']:,.0f} | {per_cpu} |"
            )
        lines.append("")
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print(markdown(results))


def replace_section(path: str | os.PathLike, body: str, key: str) -> None:
    """Write `body` as the `throughput:{key}` section of `path` (under a "## Throughput" heading when new)."""
    replace_marked_section(path, body, f"throughput:{key}", heading="## Throughput")


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    parser.add_argument(
        "--text_model", default="minilm", help=f"minilm (bundled), {', '.join(RANDOM_TEXT_CONFIGS)} or a local path"
    )
    parser.add_argument("--bundle", default=None, help="data folder from bench_data.py export (no `datasets`)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per contender per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pad_length", type=int, default=100, help="max_length of the plain padded pipeline")
    parser.add_argument("--variants", default=None, help="comma list of pretraining variant names (default: all)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile(text encoder) lever")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    parser.add_argument("--serving_id_batch_size", type=int, default=4096)
    parser.add_argument("--serving_text_batch_size", type=int, default=128)
    parser.add_argument("--synthetic_rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's; 1 on a shared CPU)"
    )
    parser.add_argument("--output", default=None, help="Markdown file whose throughput section is replaced")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--memory_probe", default=None, help=argparse.SUPPRESS)
    return parser


def make_setup(args: argparse.Namespace) -> Setup:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.bundle)
    return Setup(
        device=torch.device(args.device),
        dtype=torch.bfloat16 if args.dtype == "bf16" else None,
        data=data,
        text_model_path=text_model_path(args.text_model, data),
        flip_kwargs=flip_kwargs(data),
        feature_counts=data.processor.schema.feature_counts(),
        seed=args.seed,
    )


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the requested sections; returns the results dict (also printed / written)."""
    setup = make_setup(args)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    results: dict[str, Any] = {
        "meta": {
            "device": args.device,
            "dtype": args.dtype,
            "text_model": args.text_model,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware(setup.device),
            "load_before": load_average(),
            "command": "python benchmarks/throughput.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        }
    }
    benches = {
        "lengths": lambda: length_distribution(setup.data),
        "pretrain": lambda: bench_pretraining(setup, args),
        "memory": lambda: peak_memory(setup, args),
        "serving": lambda: bench_serving(setup, args),
        "preprocess": lambda: bench_preprocessing(setup, args),
    }
    for name in SECTIONS:
        if name in sections:
            print(f"[throughput] {name} ...", file=sys.stderr, flush=True)
            results[name] = benches[name]()
            results["meta"]["load_after"] = load_average()
            if args.json:  # after every section: a long run that is cut off keeps what it measured
                write_json(args.json, results)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return {}
    results = run(args, argv)
    print_table(results)
    if args.output:
        sections = "" if args.sections == ",".join(SECTIONS) else "-" + args.sections.replace(",", "+")
        amx = "-amx" if args.device == "cpu" and cpu_bf16_unit() == "AMX" else ""  # its own sections beside the EPYC's
        key = f"{args.device}{amx}-{args.dtype}-{Path(args.text_model).name}-b{args.batch_size}{sections}"
        replace_section(args.output, markdown(results), key)
    return results


if __name__ == "__main__":
    main()
