#!/usr/bin/env bash
# On a CUDA machine: the quantization GPU tests (pytest -m gpu -k quant), then `llmfleet bench offline` on
# llama3-8b with random weights, each pair on the same workload:
#   W2 bf16 vs fp8 (W8A8), W0 bf16 vs int4 (W4A16), W1 kv_cache_dtype auto vs fp8,
# and a table of output tok/s, weight GiB, KV blocks and how many 8k-token sequences the KV cache holds at once.
#   bash scripts/gpu_quant_bench.sh
#   SHAPE=qwen3-0.6b W1_REQUESTS=256 bash scripts/gpu_quant_bench.sh
# Result JSONs (benchmarks/results layout: <device>/offline-<workload>-<shape>-<time>.json) and logs go under
# $OUT (default /tmp/llmfleet-quant-bench); copy the JSONs to benchmarks/results/ to keep them. About 6-8 minutes
# on an H200 (each run loads the model, sizes the KV cache and captures CUDA graphs: ~40-60 s before timing).
set -uo pipefail
cd "$(dirname "$0")/.."
shape=${SHAPE:-llama3-8b}
out=${OUT:-/tmp/llmfleet-quant-bench}
w1_requests=${W1_REQUESTS:-128}   # half of W1, to stay inside the time budget
mkdir -p "$out/results"
source scripts/device_env.sh
export TRITON_DEFAULT_FP_FUSION=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"

rc=0
python3 -m pytest tests/test_kv_fp8_gpu.py -m gpu -k quant -q -p no:cacheprovider 2>&1 | tee "$out/tests.log" || rc=1

bench() {  # bench <label> <workload> [flags...]
  local label=$1 workload=$2
  shift 2
  echo "== $label: $shape $workload $*"
  timeout 240 python3 -m llmfleet.entrypoints.cli bench offline --shape "$shape" --workload "$workload" \
    --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
}
bench w2-bf16 W2
bench w2-fp8 W2 --quantization fp8
bench w0-bf16 W0
bench w0-int4 W0 --quantization int4
bench w1-kv-auto W1 --num-requests "$w1_requests"
bench w1-kv-fp8 W1 --num-requests "$w1_requests" --kv-cache-dtype fp8

python3 - "$out/results" <<'PY'
import json, pathlib, sys
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).rglob("offline-*.json"))]
print(f"{'workload':8} {'quant':6} {'kv':5} {'out tok/s':>10} {'weights GiB':>11} {'KV blocks':>10} {'8k seqs':>8}")
for r in sorted(rows, key=lambda r: (r["workload"], r.get("quantization") or "", r.get("kv_cache_dtype"))):
    print(f"{r['workload']:8} {r.get('quantization') or 'bf16':6} {r.get('kv_cache_dtype', 'auto'):5} "
          f"{r['output_tokens_per_s']:10.0f} {r.get('weight_gib', 0):11.2f} {r['num_kv_blocks']:10d} "
          f"{r.get('seqs_of_8k_tokens', 0):8d}")
PY
exit $rc
