#!/usr/bin/env bash
# On a CUDA machine: tensor parallelism through worker processes over NCCL (docs/parallelism.md).
#   smoke      (1 GPU)  the GPU tests of the worker-process executor (TP=1 over NCCL, CUDA graphs on, token-exact
#                       against the in-process runner); NCCL all-reduce eager and captured in a CUDA graph at world
#                       size 1; llama3-8b W0 in-process and through one worker process (the executor's overhead)
#   tp         (4 GPUs) llama3-8b W2 and W0 at TP=1, 2 and 4 (W2 at the same total batch: 256 requests)
#   70b        (4 GPUs) llama3-70b (random weights) at TP=4: W1 and W2
#   allreduce  (2+ GPUs) all-reduce latency 8 KB - 8 MB: NCCL eager / graph, custom one-shot / two-shot
#   STAGES=smoke bash scripts/gpu_multigpu_bench.sh            # what one GPU can run
#   STAGES="tp allreduce" bash scripts/gpu_multigpu_bench.sh   # on nvidia-h200-x4 (x2: tp runs TP=1 and 2)
# Default STAGES: smoke with one GPU, else everything. NVLink multicast stays off (scripts/device_env.sh).
# Result JSONs (benchmarks/results layout) and logs go under $OUT (default /tmp/llmfleet-multigpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-multigpu-bench}
mkdir -p "$out/results"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
gpus=$(nvidia-smi --list-gpus | wc -l)
echo "GPUs: $gpus; NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST=$TORCH_SYMM_MEM_DISABLE_MULTICAST" \
  | tee -a "$out/gpu.txt"
default_stages=$([[ $gpus -ge 2 ]] && echo "smoke tp 70b allreduce" || echo "smoke")
rc=0
want() { [[ " ${STAGES:-$default_stages} " == *" $1 "* ]]; }

bench() {  # bench <label> <seconds> <shape> <workload> [flags...]
  local label=$1 limit=$2 shape=$3 workload=$4
  shift 4
  echo "== $label: $shape $workload $*"
  timeout "$limit" python3 -m llmfleet.entrypoints.cli bench offline --shape "$shape" --workload "$workload" \
    --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
}

if want smoke; then
  echo "== GPU tests of the executor"
  timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_tensor_parallel_engine.py 2>&1 | tee "$out/smoke-tests.log" \
    | tail -5 || rc=1
  echo "== NCCL all-reduce at world size 1 (eager and graph-captured)"
  timeout 120 python3 -m llmfleet.entrypoints.cli bench allreduce --world-size 1 --sizes 8K 64K 1M 8M \
    --results-dir "$out/results" 2>&1 | tee "$out/allreduce-w1.log" || rc=1
  bench w0-uni 240 llama3-8b W0 --distributed-executor-backend uni
  bench w0-mp-tp1 240 llama3-8b W0 --distributed-executor-backend mp --tensor-parallel-size 1
fi
if want tp; then
  for tp in 1 2 4; do
    [[ $tp -gt $gpus ]] && continue
    bench "w2-tp$tp" 420 llama3-8b W2 --tensor-parallel-size $tp --distributed-executor-backend mp
    bench "w0-tp$tp" 240 llama3-8b W0 --tensor-parallel-size $tp --distributed-executor-backend mp
  done
fi
if want 70b && [[ $gpus -ge 4 ]]; then
  bench w2-70b-tp4 540 llama3-70b W2 --tensor-parallel-size 4
  bench w1-70b-tp4 540 llama3-70b W1 --tensor-parallel-size 4
fi
if want allreduce && [[ $gpus -ge 2 ]]; then
  echo "== all-reduce: NCCL against one-shot / two-shot over $gpus GPUs"
  timeout 240 python3 -m llmfleet.entrypoints.cli bench allreduce --sizes 8K 32K 128K 512K 2M 8M \
    --results-dir "$out/results" 2>&1 | tee "$out/allreduce.log" || rc=1
fi

python3 - "$out/results" <<'PY'
import json, pathlib, sys
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).rglob("offline-*.json"))]
print(f"{'shape':12} {'work':4} {'tp':>2} {'procs':5} {'out tok/s':>10} {'graphs':6}")
for r in rows:
    print(f"{r['shape']:12} {r['workload']:4} {r.get('tensor_parallel_size', 1):>2} "
          f"{'mp' if r.get('worker_processes') else 'uni':5} {r['output_tokens_per_s']:10.1f} {str(r['cuda_graphs']):6}")
uni = [r for r in rows if r["workload"] == "W0" and not r.get("worker_processes")]
mp1 = [r for r in rows if r["workload"] == "W0" and r.get("worker_processes") and r.get("tensor_parallel_size", 1) == 1]
if uni and mp1:
    print(f"W0 one worker process / in-process: {mp1[-1]['output_tokens_per_s'] / uni[-1]['output_tokens_per_s']:.3f} "
          f"(step wall ms {mp1[-1].get('step_wall_ms_mean', 0):.2f} vs {uni[-1].get('step_wall_ms_mean', 0):.2f})")
base = {r["workload"]: r for r in rows if r.get("tensor_parallel_size", 1) == 1 and r.get("worker_processes")}
for r in rows:
    b = base.get(r["workload"])
    if b and r["shape"] == b["shape"] and r.get("tensor_parallel_size", 1) > 1:
        print(f"{r['workload']} TP={r['tensor_parallel_size']}: {r['output_tokens_per_s'] / b['output_tokens_per_s']:.2f}x TP=1")
PY
tar -C "$out/results" -czf "$out/results.tgz" .
exit $rc
