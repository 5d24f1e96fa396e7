#!/usr/bin/env bash
# Train the demo models on the lent GPU machine. Run from the repository root, with .demo_data carried
# (made here by scripts/train_demo_tokenizer.py and scripts/demo_corpus.py):
#   bash scripts/gpu_train_demo.sh smoke <git-sha>   # ~2 min: versions, throughput, a short loss curve per model
#   bash scripts/gpu_train_demo.sh full <git-sha>    # both models at once on the one GPU (each is far too small
#                                                    # to fill it), then both folders packed for the trip back
# Everything that must come back lands in $OUT: logs, the training JSONs and the model folders as one tar split
# into 15 MiB parts (join with `cat demo_models.tar.part-* | tar -x`).
set -euo pipefail
MODE=${1:?usage: gpu_train_demo.sh smoke|full <git-sha>}
SHA=${2:-unknown}
OUT=${OUT:-/tmp/demo_out}
WORK=/tmp/demo_work
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, transformers.__version__)'

train() {  # name steps extra-args...
  local name=$1 steps=$2; shift 2
  python3 scripts/train_demo.py --name "$name" --steps "$steps" --data .demo_data --out "$WORK/models/$name" \
    --log "$OUT/$name.json" --git-commit "$SHA" "$@" > "$OUT/$name.log" 2>&1
}

if [ "$MODE" = smoke ]; then
  train demo "${DEMO_STEPS:-900}" --eval-every 75 & a=$!
  train demo-draft "${DRAFT_STEPS:-900}" --eval-every 75 & b=$!
elif [ "$MODE" = full ]; then
  train demo "${DEMO_STEPS:?}" ${DEMO_ARGS:-} & a=$!
  train demo-draft "${DRAFT_STEPS:?}" ${DRAFT_ARGS:-} & b=$!
else
  echo "unknown mode $MODE" >&2; exit 2
fi
status=0
wait $a || status=$?
wait $b || status=$?
grep -hv 'it/s\]' "$OUT"/demo.log "$OUT"/demo-draft.log | tail -n 60
if [ "$MODE" = full ] && [ $status -eq 0 ]; then
  (cd "$WORK/models" && tar -cf - demo demo-draft) | split -b 15M - "$OUT/demo_models.tar.part-"
  ls -la "$OUT"
fi
exit $status
