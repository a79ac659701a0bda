#!/usr/bin/env bash
# The GPU benchmark suite for ONE H100/H200, quality first, with only the machine's own packages (torch,
# transformers, accelerate, peft): no `datasets`, `evaluate`, scikit-learn or network. Data and MiniLM travel in
# a bundle prepared here (ignored by git, ~50 MB):
#
#   python benchmarks/bench_data.py export --output benchmarks/.cache/bundle      # on a machine with `datasets`
#   bash benchmarks/gpu_suite.sh quality      # on the GPU machine: < 10 minutes (one device call)
#   bash benchmarks/gpu_suite.sh throughput   # then, if device time is left: < 3 minutes
#   bash benchmarks/gpu_suite.sh              # both, in that order
#   DRY_RUN=1 bash benchmarks/gpu_suite.sh    # CPU smoke test of both (tiny, ~4 min)
#
# Steps (each bounded by `timeout`; a failed step is reported and the next one runs):
#   1. environment: versions, device
#   2. quality: gpu_quality.py on the full ML-100k split, reference recipe: FLIP pretraining of the full 6-layer
#      MiniLM in bf16 at batch 1024 for 10 epochs (capped at 3.5 minutes), then FLIP_ID and DCNv2 with seeds 0, 1, 2
#      (0.3 minutes each), then FLIP (joint) and FLIP_PLM from the same pretraining, seed 0 (1.25 minutes each)
#   3. throughput: throughput.py, bf16 autocast, MiniLM-L6 (batch 256) and a random-init BERT-base-size encoder
#      (batch 128): FLIP vs plain padded MLM step, every lever (incl. fused AdamW and torch.compile), peak memory,
#      serving
# Everything is printed; Markdown + JSON land in $OUT (default outputs/gpu_suite).
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
if [[ ! $PART =~ ^(all|quality|throughput)$ ]]; then
  echo "usage: bash benchmarks/gpu_suite.sh [quality|throughput|all]" >&2
  exit 2
fi
BUNDLE=${BUNDLE:-benchmarks/.cache/bundle}
OUT=${OUT:-outputs/gpu_suite}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ -n "${DRY_RUN:-}" ]]; then
  DEVICE=cpu; DTYPE=fp32; MODELS="bert-tiny-random:8:"; TP_FLAGS="--steps 1 --repeats 1 --warmup 1 --serving_id_batch_size 64 --serving_text_batch_size 8"
  Q_FLAGS="--max_rows 256 --max_steps 4 --batch_size 16 --seeds 0"
  Q_TIMEOUT=600 STEP_TIMEOUT=600
else
  DEVICE=cuda; DTYPE=bf16; MODELS="minilm:256:--compile bert-base-random:128:"; TP_FLAGS="--steps 5 --repeats 5 --warmup 3"
  Q_FLAGS="--pretrain_epochs 10 --pretrain_minutes 3.5 --finetune_minutes 0.3 --seeds 0,1,2"
  Q_FLAGS+=" --text_seeds 0 --text_finetune_minutes 1.25"
  Q_TIMEOUT=560 STEP_TIMEOUT=75  # quality: 210 s + 6 x ~25 s + 2 x ~85 s + loading < 560 s; throughput 2 x 75 s
fi
if [[ ! -f "$BUNDLE/rows.npz" ]]; then
  echo "missing $BUNDLE: run 'python benchmarks/bench_data.py export --output $BUNDLE' where datasets is installed" >&2
  exit 2
fi

step() {  # step NAME SECONDS CMD...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - start))s"
}

step environment 60 "$PYTHON" -c "
import torch, transformers, platform
print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
[[ -z "${DRY_RUN:-}" ]] && nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv

if [[ $PART == all || $PART == quality ]]; then
  step "quality (FLIP pretraining; FLIP_ID and DCNv2 x 3 seeds; FLIP (joint) and FLIP_PLM)" "$Q_TIMEOUT" \
    "$PYTHON" benchmarks/gpu_quality.py --bundle "$BUNDLE" --output_dir "$OUT/quality" $Q_FLAGS
  cp "$OUT/quality/quality.json" "$OUT/" 2>/dev/null || true
  rm -rf "$OUT/quality"  # checkpoints: only the JSON comes back
fi

if [[ $PART == all || $PART == throughput ]]; then
  for spec in $MODELS; do
    IFS=: read -r model batch extra <<< "$spec"  # name:batch:extra flags (torch.compile only for MiniLM: time)
    step "throughput $model batch $batch" "$STEP_TIMEOUT" "$PYTHON" benchmarks/throughput.py --device "$DEVICE" \
      --dtype "$DTYPE" --bundle "$BUNDLE" --text_model "$model" --batch_size "$batch" \
      --sections lengths,pretrain,memory,serving $TP_FLAGS $extra \
      --output "$OUT/RESULTS_gpu.md" --json "$OUT/throughput-$model-b$batch.json"
  done
fi

echo "=== done ($PART); results in $OUT"
