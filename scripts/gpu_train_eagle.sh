#!/usr/bin/env bash
# On a CUDA machine: trains an EAGLE head for the default model (SmolLM2-135M-Instruct) from its own greedy
# generations (scripts/train_eagle.py, about 3 minutes of training), then runs W0 (1 request, 128 random-id prompt
# tokens, 512 output tokens, greedy, real weights) without speculation, with the trained head and with n-gram
# lookup, plus the GPU tests of speculative decoding. docs/speculative_decoding.md describes the head.
#   MODEL=/path/to/SmolLM2-folder bash scripts/gpu_train_eagle.sh     # an HF folder or the GGUF file (no network)
#   TRAIN_SECONDS=120 STAGES="train w0" TRAIN_ARGS="--lr 3e-4" ...   # shorter training; parts of the run
# Writes under $OUT (default /tmp/llmfleet-eagle): eagle-head/ (model.safetensors ~9 MB bf16, config.json,
# training.json), results/ (bench JSONs, benchmarks/results layout), *.log, summary.txt, results.tgz.
# About 7 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-eagle}
mkdir -p "$out/results"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
model=${MODEL:-$(python3 -c 'from llmfleet.entrypoints.default_model import resolve_served_model as r; print(r(None)[0])')}
model=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); from train_eagle import hf_folder; print(hf_folder(sys.argv[1]))' "$model")
echo "default model: $model" | tee -a "$out/gpu.txt"
head="$out/eagle-head"
eagle="{\"method\": \"eagle\", \"model\": \"$head\", \"num_speculative_tokens\": ${EAGLE_K:-3}}"
ngram='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'
rc=0
want() { [[ " ${STAGES:-train w0 tests} " == *" $1 "* ]]; }

bench() {  # bench <label> <workload> [flags...]
  local label=$1 workload=$2
  shift 2
  echo "== $label: $workload $*"
  timeout 300 python3 -m llmfleet.entrypoints.cli bench offline --shape "$model" --workload "$workload" \
    --temperature 0 --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
}

if want train; then
  echo "== train: $model -> $head"
  timeout 480 python3 scripts/train_eagle.py --model "$model" --out "$head" \
    --max-seconds "${TRAIN_SECONDS:-180}" ${TRAIN_ARGS:-} 2>&1 | tee "$out/train.log" | grep -v "it/s\]" || rc=1
fi
if want w0; then
  bench w0-plain W0
  [[ -f "$head/model.safetensors" ]] && bench w0-eagle W0 --speculative-config "$eagle"
  bench w0-ngram W0 --speculative-config "$ngram"
  [[ -f "$head/model.safetensors" ]] && bench w7-b1-eagle W7 --max-num-seqs 1 --num-requests 8 \
    --speculative-config "$eagle"
  bench w7-b1-plain-8 W7 --max-num-seqs 1 --num-requests 8
fi
if want tests; then
  echo "== GPU tests: speculative decoding"
  timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_spec_graphs_gpu.py 2>&1 \
    | tee "$out/tests.log" | tail -5 || rc=1
fi

python3 - "$out/results" <<'PY' | tee "$out/summary.txt"
import json, pathlib, sys
rows = {}
for p in sorted(pathlib.Path(sys.argv[1]).rglob("offline-*.json")):
    r = json.loads(p.read_text())
    method = (r.get("speculative_config") or {}).get("method", "plain")
    rows[(r["workload"], r.get("num_requests") or 0, method)] = r
print(f"{'workload':8} {'reqs':>4} {'mode':6} {'out tok/s':>10} {'accept len':>10} {'speedup':>8}")
for (w, n, mode), r in sorted(rows.items()):
    base = rows.get((w, n, "plain"))
    spec = r.get("spec_decode") or {}
    speedup = r["output_tokens_per_s"] / base["output_tokens_per_s"] if base else float("nan")
    print(f"{w:8} {n:4} {mode:6} {r['output_tokens_per_s']:10.0f} {spec.get('mean_acceptance_length') or 0:10.2f} "
          f"{speedup:8.2f}")
PY
[[ -f "$head/training.json" ]] && cp "$head/training.json" "$out/results/eagle-training.json"
tar -C "$out" -czf "$out/results.tgz" results eagle-head 2>/dev/null
exit $rc
