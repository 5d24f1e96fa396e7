#!/usr/bin/env bash
# On a GPU machine: offline benchmarks with and without piecewise CUDA graphs for mixed steps, same process setup.
#   bash scripts/gpu_graphs_ab.sh "qwen3-0.6b:W1 llama3-8b:W1"
# Result JSONs (the cuda_graph_max_tokens field tells the two apart) and the log go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-"qwen3-0.6b:W1"}
out=${OUT:-/tmp/llmfleet-graphs-ab}
mkdir -p "$out"
source scripts/device_env.sh
status=0
for pair in $pairs; do
  for max_tokens in 0 ${MAX_TOKENS:-1024}; do
    echo "== ${pair} cuda_graph_max_tokens=${max_tokens}"
    python3 -m llmfleet.entrypoints.cli bench offline --shape "${pair%%:*}" --workload "${pair##*:}" \
      --cuda-graph-max-tokens "$max_tokens" --results-dir "$out" ${BENCH_ARGS:-} 2>&1 | grep -v Warning \
      | tail -4 || status=1
  done
done
exit $status
