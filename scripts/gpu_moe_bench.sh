#!/usr/bin/env bash
# On a CUDA machine: the mixture-of-experts figures (docs/moe.md), random bf16 weights built from config alone:
#   tests    the MoE GPU tests (compiled Triton kernels against the torch reference at model sizes);
#   kernel   `llmfleet bench moe-kernel`: the fused MoE layer of qwen3-30b-a3b at decode batch 1, 16 and 128,
#            time and GB/s over the bytes of the distinct experts read;
#   tune     the same with every candidate block configuration (the best per batch is a CONFIG_TABLE row);
#   w0 w1 w2 `llmfleet bench offline --shape qwen3-30b-a3b` on W0, W1 and W2 (vLLM 0.26.0 to be run the same way:
#            its offline LLM, load_format="dummy", bf16, gpu_memory_utilization 0.85, for the comparison);
#   mixtral  (not in the default run) mixtral-8x7b on W2: 93 GB of weights, ~25 GB left for the KV cache.
#   bash scripts/gpu_moe_bench.sh                       # all but tune, about 8 minutes on an H200
#   STAGES="tests kernel" bash scripts/gpu_moe_bench.sh  # a part of the run per call
# Result JSONs (benchmarks/results layout) and logs go under $OUT (default /tmp/llmfleet-moe-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-moe-bench}
mkdir -p "$out/results"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
rc=0
want() { [[ " ${STAGES:-tests kernel w0 w1 w2} " == *" $1 "* ]]; }
cli="python3 -m llmfleet.entrypoints.cli"

if want tests; then
  echo "== tests"
  timeout 240 python3 -m pytest -m gpu -q -x tests/test_fused_moe_kernel.py tests/test_moe.py 2>&1 \
    | tee "$out/tests.log" | tail -15 || rc=1
fi
if want kernel; then
  echo "== moe-kernel"
  timeout 180 $cli bench moe-kernel --shape qwen3-30b-a3b --batch 1 16 128 --results-dir "$out/results" 2>&1 \
    | tee "$out/moe-kernel.log" || rc=1
fi
if want tune; then
  echo "== moe-kernel --tune"
  timeout 540 $cli bench moe-kernel --shape qwen3-30b-a3b --batch 1 16 128 512 --tune --iters 10 \
    --results-dir "$out/results" 2>&1 | tee "$out/moe-kernel-tune.log" || rc=1
fi
if want mixtral; then
  echo "== offline mixtral-8x7b W2"
  timeout 420 $cli bench offline --shape mixtral-8x7b --workload W2 --results-dir "$out/results" 2>&1 \
    | tee "$out/offline-mixtral-w2.log" | grep -v "it/s\]" || rc=1
fi
for w in W0 W1 W2; do
  lower=$(echo "$w" | tr 'A-Z' 'a-z')
  if want "$lower"; then
    echo "== offline qwen3-30b-a3b $w"
    timeout 300 $cli bench offline --shape qwen3-30b-a3b --workload "$w" --results-dir "$out/results" 2>&1 \
      | tee "$out/offline-$lower.log" | grep -v "it/s\]" || rc=1
  fi
done

python3 - "$out/results" <<'PY'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*.json")):
    r = json.loads(p.read_text())
    if r.get("kind") == "moe-kernel":
        for row in r["rows"]:
            best = row.get("best")
            extra = f"  best {best['us']:.1f} us {best['config']}" if best else ""
            print(f"moe-kernel batch {row['batch']:4}: {row['distinct_experts']:3} experts {row['us']:8.1f} us "
                  f"{row['gb_per_s']:7.0f} GB/s{extra}")
    elif r.get("kind") == "offline":
        print(f"offline {r['shape']} {r['workload']}: {r['output_tokens_per_s']:.0f} output tok/s")
PY
tar -C "$out/results" -czf "$out/results.tgz" .
exit $rc
