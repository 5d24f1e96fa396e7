#!/usr/bin/env bash
# On a GPU machine: the gateway's routing policies over two llmfleet serve replicas sharing the one GPU (each taking
# GPU_SHARE of its memory), a benchmark shape with random weights, W5 (multi-turn) and W1 (no shared prefixes):
# `llmfleet bench fleet` starts the replicas and a gateway afresh per policy and drives the same requests through it.
#   bash scripts/gpu_fleet_bench.sh
#   SHAPE=qwen3-0.6b REPLICAS=2 RATE=8 NUM_REQUESTS=200 WORKLOADS=W5 bash scripts/gpu_fleet_bench.sh
# Result JSONs (benchmarks/results layout) and logs go under $OUT (default /tmp/llmfleet-fleet-bench). About 6
# minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-fleet-bench}
mkdir -p "$out/results"
source scripts/device_env.sh
shape=${SHAPE:-qwen3-0.6b}
rc=0
for workload in ${WORKLOADS:-W5 W1}; do
  echo "== $workload"
  timeout ${STAGE_TIMEOUT:-280} python3 -m llmfleet.entrypoints.cli bench fleet --model "$shape" --load-format dummy \
    --device cuda --replicas "${REPLICAS:-2}" --gpu-memory-utilization "${GPU_SHARE:-0.4}" --num-kv-blocks 0 \
    --tokenizer demo --workload "$workload" ${NUM_REQUESTS:+--num-requests $NUM_REQUESTS} --rate "${RATE:-inf}" \
    --max-num-seqs "${MAX_NUM_SEQS:-64}" --max-model-len 8192 --shape "$shape" --results-dir "$out/results" 2>&1 \
    | tee "$out/fleet-$workload.log" | grep -v "it/s\]" || rc=1
done
exit $rc
