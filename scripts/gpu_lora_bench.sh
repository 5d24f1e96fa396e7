#!/usr/bin/env bash
# On a CUDA machine: multi-LoRA serving's figures (docs/lora.md), llama3-8b (random weights) on W2 (256 requests,
# input 512, output 256, all at once):
#   base   the base model only
#   lora16 16 rank-16 adapters in 16 device slots, requests spread evenly (goal: >= 0.85x of base's throughput)
#   lora64 64 rank-16 adapters in 8 slots: adapters swap in and out (slot loads and evictions in the JSON)
#   gpu    the LoRA GPU tests (kernel vs reference, inside CUDA graphs, the engine vs merged weights)
#   bash scripts/gpu_lora_bench.sh
#   STAGES="base lora16" bash scripts/gpu_lora_bench.sh      # a part of the run per call
# Result JSONs (benchmarks/results layout: offline-w2-llama3-8b-*.json with lora_* fields, and lora-summary-*.json
# with the ratios) and logs go under $OUT (default /tmp/llmfleet-lora-bench). About 3 minutes on an H200 (each
# stage 30-60 s, most of it start-up).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-lora-bench}
mkdir -p "$out/results"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
rc=0

bench() {  # bench <label> [flags...]
  local label=$1
  shift
  echo "== $label: llama3-8b W2 $*"
  timeout 240 python3 -m llmfleet.entrypoints.cli bench offline --shape llama3-8b --workload W2 \
    --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
}
want() { [[ " ${STAGES:-base lora16 lora64 gpu} " == *" $1 "* ]]; }
want base && bench base
want lora16 && bench lora16 --lora-adapters 16 --lora-rank 16 --max-loras 16
want lora64 && bench lora64 --lora-adapters 64 --lora-rank 16 --max-loras 8
if want gpu; then
  echo "== pytest -m gpu tests/test_lora_gpu.py"
  timeout 240 python3 -m pytest -m gpu tests/test_lora_gpu.py -x -q 2>&1 | tee "$out/pytest-gpu.log" | tail -20
  [[ ${PIPESTATUS[0]} -eq 0 ]] || rc=1
fi

python3 - "$out/results" <<'PY'
import datetime, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
runs = {}
for p in sorted(root.rglob("offline-w2-llama3-8b-*.json")):
    r = json.loads(p.read_text())
    runs[(r.get("lora_adapters", 0), r.get("max_loras"))] = r
if not runs:
    sys.exit(0)
base = runs.get((0, None))
rows = []
print(f"{'adapters':>8} {'slots':>5} {'out tok/s':>10} {'x base':>7} {'slot loads':>10} {'evictions':>9}")
for (n, slots), r in sorted(runs.items(), key=lambda kv: kv[0][0]):
    ratio = r["output_tokens_per_s"] / base["output_tokens_per_s"] if base else None
    rows.append(dict(lora_adapters=n, max_loras=slots, output_tokens_per_s=r["output_tokens_per_s"],
                     ratio_to_base=ratio, lora_slot_loads=r.get("lora_slot_loads"),
                     lora_evictions=r.get("lora_evictions"), commit=r.get("commit"), date=r.get("date")))
    print(f"{n:8} {slots or '-':>5} {r['output_tokens_per_s']:10.0f} {ratio or float('nan'):7.3f} "
          f"{r.get('lora_slot_loads', 0):10} {r.get('lora_evictions', 0):9}")
device = next(iter(runs.values()))["device"]
folder = next(root.rglob("offline-w2-llama3-8b-*.json")).parent
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
summary = dict(kind="lora-summary", shape="llama3-8b", workload="W2", device=device, goal="lora16 >= 0.85x base",
               runs=rows)
(folder / f"lora-summary-w2-llama3-8b-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
tar -C "$out/results" -czf "$out/results.tgz" .
exit $rc
