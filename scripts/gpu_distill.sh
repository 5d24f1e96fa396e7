#!/usr/bin/env bash
# On a CUDA machine: distil the default model (SmolLM2-135M-Instruct) into a small draft and measure it as one
# (docs/lifecycle.md). Stages (STAGES="train bench", default both; each fits one GPU call):
#   train: build PROMPTS (5000) prompts from this repository (plus PROMPTS/15 random-id prompts shaped like W0's), let the teacher
#          answer them with llmfleet's engine, train the student (the teacher's config with LAYERS decoder layers,
#          initialised from its embeddings and evenly spaced layers) for TRAIN_SECONDS with KD on the teacher's top-32
#          log-probs + CE; the student lands in $WORK/student and, as a tar split in 15 MiB parts, in $OUT.
#   bench: W0 (batch 1, greedy) on the default model alone, then with a draft (k=$K): the distilled student, the
#          same student untrained (teacher init, no training) and a random-init one of the same size.
#   MODEL=/path/to/SmolLM2-folder bash scripts/gpu_distill.sh
# Writes $OUT/results/: distill-record.json (the training record: loss curve, held-out KL and agreement before and
# after), offline-w0-*.json (bench offline records, one per run), distill-summary.json (acceptance lengths, the
# ratios to the untrained students, the wall-clock speedups over the plain run). Logs in $OUT/*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmfleet-distill}
work=${WORK:-/tmp/llmfleet-distill-work}
mkdir -p "$out/results" "$work"
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
model=${MODEL:-$(python3 -c 'from llmfleet.entrypoints.default_model import resolve_served_model as r; print(r(None)[0])')}
echo "default model: $model" | tee -a "$out/gpu.txt"
student_config="{\"num_hidden_layers\": ${LAYERS:-4}}"
k=${K:-4}
rc=0
want() { [[ " ${STAGES:-train bench} " == *" $1 "* ]]; }
cli() { python3 -m llmfleet.entrypoints.cli "$@"; }

if want train; then
  echo "== train: $student_config, ${TRAIN_SECONDS:-210} s"
  timeout 480 python3 -m llmfleet.entrypoints.cli distill --teacher "$model" --repo-prompts "${PROMPTS:-5000}" \
    --student-config "$student_config" --out "$work/student" --steps "${STEPS:-6000}" --batch-size 32 \
    --lr "${LR:-5e-4}" --max-seconds "${TRAIN_SECONDS:-210}" --max-new-tokens "${MAX_NEW:-192}" 2>&1 \
    | tee "$out/train.log" | grep -v "it/s\]\|step/s\]\|s/step\]\|prompt/s\]\|batch/s\]" || rc=1
  cp "$work/student/distill.json" "$out/results/distill-record.json" || rc=1
  rm -f "$out"/student.tar.part-*
  (cd "$work" && tar -cf - student) | split -b 15M - "$out/student.tar.part-"
  du -sh "$work/student" | tee -a "$out/gpu.txt"
fi

if want bench; then
  student=${STUDENT:-$work/student}
  if [ ! -f "$student/config.json" ] && compgen -G "$out/student.tar.part-*" >/dev/null; then
    cat "$out"/student.tar.part-* | tar -x -C "$work"
  fi
  cli distill --teacher "$model" --student-config "$student_config" --out "$work/untrained-teacher-init" --init-only
  cli distill --teacher "$model" --student-config "{\"num_hidden_layers\": ${LAYERS:-4}, \"init\": \"random\"}" \
    --out "$work/untrained-random" --init-only
  bench() {  # bench <label> [flags...]
    local label=$1
    shift
    echo "== $label"
    timeout 240 python3 -m llmfleet.entrypoints.cli bench offline --shape "$model" --workload W0 --max-num-seqs 1 \
      --temperature 0 --results-dir "$out/results" "$@" 2>&1 | tee "$out/$label.log" | grep -v "it/s\]" || rc=1
  }
  draft() { echo "{\"method\": \"draft\", \"model\": \"$1\", \"num_speculative_tokens\": $k}"; }
  bench w0-plain
  bench w0-distilled --speculative-config "$(draft "$student")"
  bench w0-untrained-teacher-init --speculative-config "$(draft "$work/untrained-teacher-init")"
  bench w0-untrained-random --speculative-config "$(draft "$work/untrained-random")"
  python3 - "$out/results" "$student" "$work" <<'PY' || rc=1
import json, pathlib, sys
results, student, work = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
labels = {student: "distilled", f"{work}/untrained-teacher-init": "untrained_teacher_init",
          f"{work}/untrained-random": "untrained_random"}
runs = {}
for p in sorted(results.rglob("offline-w0-*.json")):
    r = json.loads(p.read_text())
    label = labels.get((r.get("speculative_config") or {}).get("model"), "plain") if r.get("speculative_config") \
        else "plain"
    runs[label] = {"file": p.name, "output_tokens_per_s": r["output_tokens_per_s"],
                   "mean_acceptance_length": (r.get("spec_decode") or {}).get("mean_acceptance_length"),
                   "acceptance_rate": (r.get("spec_decode") or {}).get("acceptance_rate")}
plain = runs.get("plain", {}).get("output_tokens_per_s")
for run in runs.values():
    run["speedup_vs_plain"] = run["output_tokens_per_s"] / plain if plain else None
summary = {"workload": "W0", "batch": 1, "temperature": 0, "runs": runs}
d = runs.get("distilled", {}).get("mean_acceptance_length")
for base in ("untrained_teacher_init", "untrained_random"):
    b = runs.get(base, {}).get("mean_acceptance_length")
    summary[f"acceptance_length_ratio_vs_{base}"] = d / b if d and b else None
record = results / "distill-record.json"
if record.exists():
    rec = json.loads(record.read_text())
    summary["held_out"] = rec["held_out"]
    summary["student_parameters"] = rec["student_parameters"]
(results / "distill-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
PY
fi
ls -la "$out" "$out/results"
exit $rc
