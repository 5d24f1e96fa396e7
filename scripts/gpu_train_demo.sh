#!/usr/bin/env bash
# Train the demo models on the lent GPU machine. Run from the repository root, with .demo_data carried
# (made here by scripts/train_demo_tokenizer.py and scripts/demo_corpus.py):
#   bash scripts/gpu_train_demo.sh smoke <git-sha>   # ~1 min: versions, throughput, a short loss curve per model
#   bash scripts/gpu_train_demo.sh full <git-sha>    # ~4 min: a small sweep of both models, all runs at once on
#                                                    # the one GPU (each model is far too small to fill it)
# The full mode keeps, per model, the run with the lowest loss on the selection windows (validation windows 64 and
# up; the reported perplexity uses windows 0-63, which no choice looks at), among the runs whose greedy
# continuation of "def fibonacci(n):\n" compiles (the acceptance bar of tests/test_demo_models.py) when any does.
# What must come back lands in $OUT: the log, <name>.json of the kept runs, sweep.json, and both kept folders as
# one tar split into 15 MiB parts (join with `cat demo_models.tar.part-* | tar -x`).
set -euo pipefail
MODE=${1:?usage: gpu_train_demo.sh smoke|full <git-sha>}
SHA=${2:-unknown}
OUT=${OUT:-/tmp/demo_out}
WORK=/tmp/demo_work
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/logs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, transformers.__version__)'

# name tag steps [train_demo.py options]: one run per line, all started together. The full sweep's settings come
# from a first sweep (benchmarks/results/demo_training/sweep-1.json): the target overfits after ~12 epochs whatever
# the dropout, so its schedule is short enough to anneal there; the draft kept improving to 32 epochs.
if [ "$MODE" = smoke ]; then
  RUNS="demo smoke 900 --dropout 0.1
demo-draft smoke 900 --dropout 0.1"
elif [ "$MODE" = full ]; then
  RUNS="demo a 1100 --dropout 0.2
demo b 1100 --dropout 0.2 --lr 1e-3
demo c 1400 --dropout 0.3 --lr 1e-3
demo-draft a 2400 --dropout 0.15"
else
  echo "unknown mode $MODE" >&2; exit 2
fi
pids=()
while read -r name tag steps options; do
  # shellcheck disable=SC2086  # options is a list of flags
  python3 scripts/train_demo.py --name "$name" --steps "$steps" $options --data .demo_data \
    --out "$WORK/runs/$name.$tag" --log "$WORK/logs/$name.$tag.json" --git-commit "$SHA" \
    --max-seconds "${MAX_SECONDS:-240}" > "$WORK/logs/$name.$tag.log" 2>&1 &
  pids+=($!)
done <<< "$RUNS"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
grep -hv 'it/s\]' "$WORK"/logs/*.log | grep -v '"step"' || true
[ $status -eq 0 ] || exit $status

python3 - "$WORK" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = [json.loads(p.read_text()) for p in sorted((work / "logs").glob("*.json"))]
sweep = []
for run, path in zip(runs, sorted((work / "logs").glob("*.json"))):
    sweep.append({"run": path.stem, **{k: run[k] for k in ("name", "steps", "steps_done", "best_step", "epochs",
                  "hyperparameters", "best_select_loss", "val_ppl", "wall_seconds", "samples", "curve")}})
for name in sorted({r["name"] for r in runs}):
    kept = min((s for s in sweep if s["name"] == name),
               key=lambda s: (not s["samples"][0]["compiles"], s["best_select_loss"]))
    print(f"{name}: keep {kept['run']} (select loss {kept['best_select_loss']}, val ppl {kept['val_ppl']:.3f})")
    for s in sweep:
        if s["name"] == name:
            s["kept"] = s is kept
            print(f"  {s['run']}: select {s['best_select_loss']} ppl {s['val_ppl']:.3f} best step "
                  f"{s['best_step']}/{s['steps_done']} in {s['wall_seconds']} s, samples compile "
                  f"{[x['compiles'] for x in s['samples']]}")
    shutil.copy(work / "logs" / f"{kept['run']}.json", out / f"{name}.json")
    shutil.copytree(work / "runs" / kept["run"], work / "models" / name)
(out / "sweep.json").write_text(json.dumps(sweep, indent=1) + "\n")
PY
if [ "$MODE" = full ]; then
  (cd "$WORK/models" && tar -cf - demo demo-draft) | split -b 15M - "$OUT/demo_models.tar.part-"
fi
ls -la "$OUT"
