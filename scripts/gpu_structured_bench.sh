#!/usr/bin/env bash
# On a GPU machine: the cost of JSON-schema decoding. The offline bench runs the same batch of requests twice on a
# benchmark shape (random weights), unconstrained and under a JSON schema (`--structured json`), and prints the
# constrained run's output tokens/s as a fraction of the unconstrained one's (goal: >= 0.90 at batch 64). Then the
# compile time of a 50-field schema over the shape's vocabulary size (goal: <= 50 ms, cached after the first).
#   bash scripts/gpu_structured_bench.sh                       # qwen3-0.6b, 64 requests of W2 (input 512, output 256)
#   SHAPE=llama3-8b NUM_REQUESTS=64 bash scripts/gpu_structured_bench.sh
# Result JSONs go under benchmarks/results/<device>/ (and are listed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${SHAPE:-qwen3-0.6b}
num=${NUM_REQUESTS:-64}
source scripts/device_env.sh
common=(--shape "$shape" --workload W2 --num-requests "$num" --max-num-seqs "$num" --device cuda)
before=$(date +%s)
python3 -m llmfleet.entrypoints.cli bench offline "${common[@]}" --structured none | tee /tmp/structured-none.txt
python3 -m llmfleet.entrypoints.cli bench offline "${common[@]}" --structured json | tee /tmp/structured-json.txt
python3 - <<'PY'
import json, pathlib, sys
runs = sorted(pathlib.Path("benchmarks/results").glob("*/offline-w2-*.json"), key=lambda p: p.stat().st_mtime)[-2:]
plain, constrained = (json.loads(p.read_text()) for p in runs)
assert (plain["structured"], constrained["structured"]) == ("none", "json"), [str(p) for p in runs]
ratio = constrained["output_tokens_per_s"] / plain["output_tokens_per_s"]
print(f"JSON-schema decoding: {constrained['output_tokens_per_s']:.0f} vs {plain['output_tokens_per_s']:.0f} "
      f"output tok/s unconstrained = {ratio:.2f} ({constrained['output_tokens']} of {plain['output_tokens']} tokens)")
PY
vocab=$(python3 -c "from llmfleet.model.shapes import shape_config; print(shape_config('$shape').vocab_size)")
python3 -m llmfleet.entrypoints.cli bench grammar --vocab-size "$vocab" --num-fields 50
find benchmarks/results -name '*.json' -newermt "@$before" -print
