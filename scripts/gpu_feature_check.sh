#!/usr/bin/env bash
# One GPU-machine run over the features that need the device to be checked and measured: every `pytest -m gpu` test,
# the quantized llama3-8b pairs (W2 bf16 vs fp8, W0 bf16 vs int4), the fp8 KV cache on qwen3-0.6b W1 (auto vs fp8),
# JSON-schema decoding against unconstrained decoding (qwen3-0.6b, 64 requests of W2) with the grammar compile time,
# and embedding throughput (all-MiniLM-L6-v2's shape, batch 256; carry .minilm from `gpu_embed_bench.sh --prepare`).
#   bash scripts/gpu_feature_check.sh
# Logs and one tarball of every result JSON go to $OUT (default /tmp/llmfleet-feature-check): few files, so that
# they all come back from a lent machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-feature-check}
results="$out/results"
mkdir -p "$results"
source scripts/device_env.sh
rc=0
log() { tee -a "$out/log.txt"; }
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_engine.py tests/test_triton_attention.py \
  tests/test_fused_kernels.py tests/test_kv_fp8_gpu.py 2>&1 | tail -25 | log || rc=1
offline() {  # offline <shape> <workload> [flags...]
  local shape=$1 workload=$2
  shift 2
  echo "== bench offline $shape $workload $*" | log
  timeout 240 python3 -m llmfleet.entrypoints.cli bench offline --shape "$shape" --workload "$workload" \
    --results-dir "$results" "$@" 2>&1 | grep -v "it/s\]\|Warning" | tail -3 | log || rc=1
}
if [ -z "${SKIP_QUANT:-}" ]; then
  offline llama3-8b W2
  offline llama3-8b W2 --quantization fp8
  offline llama3-8b W0
  offline llama3-8b W0 --quantization int4
  offline qwen3-0.6b W1
  offline qwen3-0.6b W1 --kv-cache-dtype fp8
fi
if [ -z "${SKIP_STRUCTURED:-}" ]; then
  offline qwen3-0.6b W2 --num-requests 64 --max-num-seqs 64 --structured none
  offline qwen3-0.6b W2 --num-requests 64 --max-num-seqs 64 --structured json
  vocab=$(python3 -c "from llmfleet.model.shapes import shape_config; print(shape_config('qwen3-0.6b').vocab_size)")
  timeout 120 python3 -m llmfleet.entrypoints.cli bench grammar --vocab-size "$vocab" --num-fields 50 \
    --results-dir "$results" 2>&1 | tail -5 | log || rc=1
fi
if [ -z "${SKIP_EMBED:-}" ] && [ -d .minilm ]; then
  timeout 120 python3 -m llmfleet.entrypoints.cli bench embed --model .minilm --load-format dummy --device cuda \
    --dtype float16 --batch-size 256 --num-sentences 16384 --results-dir "$results" 2>&1 | tail -5 | log || rc=1
fi
tar -C "$results" -czf "$out/results.tgz" . && rm -rf "$results"
exit $rc
