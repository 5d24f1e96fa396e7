#!/usr/bin/env bash
# On a CUDA machine: 2:4 pruning of the default model (SmolLM2-135M-Instruct) and what it costs and buys
# (docs/lifecycle.md). Stages (STAGES="test prune ppl matmul serve", default all):
#   test:   tests/test_sparse24_gpu.py (sparse vs dense masked products at decode and prefill sizes, a pruned model
#           served by the engine);
#   prune:  llmfleet prune --method wanda and --method magnitude (Wanda calibrated on this repository's docs);
#   ppl:    llmfleet bench perplexity (bf16, CUDA) of the dense model and both pruned ones on held-out text (the
#           standard library's validation split, not the calibration text); the pruned folders load with the
#           sparse24 linear method, so their linear layers run as semi-structured sparse matmuls;
#   matmul: llmfleet bench sparse24: dense vs 2:4 prefill matmul time for the default model's and llama3-8b's
#           linear shapes at T = 512, 2048, 8192.
#   serve:  llmfleet bench offline W2 (first 64 requests) on the dense and the Wanda-pruned model: the engine
#           serving the sparse24 linear method end to end (CUDA graphs; again eagerly if that run fails).
#   MODEL=/path/to/SmolLM2-folder bash scripts/gpu_prune_bench.sh
# Writes $OUT/results/: prune-<method>.json (llmfleet prune's records), perplexity-<dense|wanda|magnitude>.json,
# prune-summary.json (perplexities and deltas), sparse24-prefill-matmul-*.json (the matmul bench). Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-prune}
work=${WORK:-/tmp/llmfleet-prune-work}
mkdir -p "$out/results" "$work"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
model=${MODEL:-$(python3 -c 'from llmfleet.entrypoints.default_model import resolve_served_model as r; print(r(None)[0])')}
echo "default model: $model" | tee -a "$out/gpu.txt"
rc=0
want() { [[ " ${STAGES:-test prune ppl matmul serve} " == *" $1 "* ]]; }
cli() { python3 -m llmfleet.entrypoints.cli "$@"; }

if want test; then
  timeout 240 python3 -m pytest -m gpu tests/test_sparse24_gpu.py -q 2>&1 | tee "$out/test-sparse24-gpu.log" | tail -30 \
    || rc=1
fi
if want prune; then
  for method in wanda magnitude; do
    echo "== prune $method"
    timeout 240 python3 -m llmfleet.entrypoints.cli prune "$model" --method "$method" --out "$work/pruned-$method" \
      2>&1 | tee "$out/prune-$method.log" | grep -v "it/s\]" || rc=1
    cp "$work/pruned-$method/prune.json" "$out/results/prune-$method.json" || rc=1
  done
fi

if want ppl; then
  text="$work/heldout.txt"
  python3 - "$text" <<'PY'
import sys
from llmfleet.data.stdlib_corpus import load_split
texts = load_split("validation")
joined, size = [], 0
for f in texts:
    joined.append(f.text)
    size += len(f.text)
    if size > 300_000:
        break
open(sys.argv[1], "w").write("\n\n".join(joined))
PY
  for variant in dense wanda magnitude; do
    folder=$model
    [ "$variant" = dense ] || folder="$work/pruned-$variant"
    echo "== perplexity $variant"
    timeout 240 python3 -m llmfleet.entrypoints.cli bench perplexity --model "$folder" --text-file "$text" \
      --dtype bfloat16 --device "${DEVICE:-cuda}" > "$out/results/perplexity-$variant.json" 2> "$out/ppl-$variant.log" || rc=1
    cat "$out/results/perplexity-$variant.json"
  done
  python3 - "$out/results" <<'PY' || rc=1
import json, pathlib, sys
results = pathlib.Path(sys.argv[1])
ppl = {v: json.loads((results / f"perplexity-{v}.json").read_text())["llmfleet"] for v in ("dense", "wanda", "magnitude")}
value = lambda r: r["perplexity"] if isinstance(r, dict) else r
summary = {"perplexity": {v: value(r) for v, r in ppl.items()}}
summary["delta"] = {v: summary["perplexity"][v] - summary["perplexity"]["dense"] for v in ("wanda", "magnitude")}
summary["ratio"] = {v: summary["perplexity"][v] / summary["perplexity"]["dense"] for v in ("wanda", "magnitude")}
(results / "prune-summary.json").write_text(json.dumps({"records": ppl, **summary}, indent=1) + "\n")
print(json.dumps(summary, indent=1))
PY
fi

if want matmul; then
  echo "== sparse24 prefill matmul"
  timeout 300 python3 -m llmfleet.entrypoints.cli bench sparse24 --shape smollm2-135m llama3-8b \
    --tokens 512 2048 8192 --results-dir "$out/results" 2>&1 | tee "$out/sparse24.log" || rc=1
fi
if want serve; then
  for variant in dense wanda; do
    folder=$model
    [ "$variant" = dense ] || folder="$work/pruned-$variant"
    echo "== bench offline W2 x64: $variant"
    timeout 200 python3 -m llmfleet.entrypoints.cli bench offline --shape "$folder" --workload W2 --num-requests 64 \
      --results-dir "$out/results" 2>&1 | tee "$out/serve-$variant.log" | grep -v "it/s\]" \
      || { echo "== again eagerly: $variant"; timeout 200 python3 -m llmfleet.entrypoints.cli bench offline \
           --shape "$folder" --workload W2 --num-requests 64 --enforce-eager --results-dir "$out/results" 2>&1 \
           | tee "$out/serve-$variant-eager.log" | grep -v "it/s\]" || rc=1; }
  done
fi
ls -la "$out/results"
exit $rc
