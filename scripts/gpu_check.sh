#!/usr/bin/env bash
# One GPU-machine run: the GPU tests (`pytest -m gpu`), then offline benchmarks. Run from the repo root:
#   bash scripts/gpu_check.sh                  # GPU tests + W1/W2 for qwen3-0.6b and llama3-8b
#   bash scripts/gpu_check.sh tests            # GPU tests only
#   bash scripts/gpu_check.sh bench "qwen3-0.6b:W2 llama3-8b:W0"   # chosen shape:workload pairs
# Logs and a tarball of the result JSONs go to $OUT (default /tmp/llmfleet-gpu-check). Wheels missing from the
# machine's image (scripts/fetch_device_wheels.sh) are installed from .whl/ when present.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
pairs=${2:-"qwen3-0.6b:W1 qwen3-0.6b:W2 llama3-8b:W1 llama3-8b:W2"}
out=${OUT:-/tmp/llmfleet-gpu-check}
mkdir -p "$out/results"
source scripts/device_env.sh
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, \
'transformers', transformers.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv
status=0
if [ "$mode" = all ] || [ "$mode" = tests ]; then
  files=$(ls tests/test_gpu_*.py tests/test_triton_*.py tests/test_fused_*.py 2>/dev/null)
  python3 -m pytest -m gpu -q -p no:cacheprovider $files 2>&1 | tee "$out/pytest_gpu.log" || status=1
fi
if [ "$mode" = all ] || [ "$mode" = bench ]; then
  for pair in $pairs; do
    python3 -m llmfleet.entrypoints.cli bench offline --shape "${pair%%:*}" --workload "${pair##*:}" \
      --results-dir "$out/results" ${BENCH_ARGS:-} 2>&1 | tee -a "$out/bench.log" || status=1
  done
  tar -C "$out/results" -czf "$out/results.tgz" .
fi
exit $status
