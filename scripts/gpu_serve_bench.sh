#!/usr/bin/env bash
# On a GPU machine: serve a benchmark shape (random weights) with `llmfleet serve`, wait until /ready, drive it with
# `llmfleet bench serve` at the given rates, save /metrics, then stop the server with SIGTERM (a graceful drain).
#   bash scripts/gpu_serve_bench.sh                                    # qwen3-0.6b, W3 at 8,16,32 req/s
#   SHAPE=llama3-8b RATES=1,2,4 bash scripts/gpu_serve_bench.sh
#   WORKLOAD=W4 RATES=inf SERVE_ARGS=--no-enable-prefix-caching bash scripts/gpu_serve_bench.sh
#   BENCH_ARGS="--num-requests 200" bash scripts/gpu_serve_bench.sh    # a shorter run
#   SHAPE=path/to/model DEVICE=cpu LOAD_FORMAT=auto ... bash scripts/gpu_serve_bench.sh   # a smoke run anywhere
# Result JSONs (under $OUT/<device>/), the bench and server logs, the CPU use and the final /metrics go under $OUT
# (default /tmp/llmfleet-serve-bench).
# Wheels missing from the machine's image (scripts/fetch_device_wheels.sh) are installed from .whl/ when present.
set -uo pipefail
cd "$(dirname "$0")/.."
shape=${SHAPE:-qwen3-0.6b}
workload=${WORKLOAD:-W3}
rates=${RATES:-8,16,32}
port=${PORT:-8000}
device=${DEVICE:-cuda}
load_format=${LOAD_FORMAT:-dummy}
out=${OUT:-/tmp/llmfleet-serve-bench}
mkdir -p "$out"
source scripts/device_env.sh
url="http://127.0.0.1:$port"

# The waiting-queue bound is lifted: an overloaded rate should show up as latency, not as 429s.
python3 -m llmfleet.entrypoints.cli serve --model "$shape" --load-format "$load_format" --device "$device" --port "$port" \
  --max-waiting-requests 1000000 --log-level warning ${SERVE_ARGS:-} >"$out/server.log" 2>&1 &
server=$!
trap 'kill -KILL $server 2>/dev/null' EXIT

start=$(date +%s)
until python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('$url/ready').status != 200)" \
      2>/dev/null; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "the server exited during startup:"; tail -n 50 "$out/server.log"; exit 1
  fi
  sleep 1
done
echo "server ready in $(( $(date +%s) - start )) s"

python3 scripts/proc_cpu.py "$server" >"$out/cpu-before.json"
python3 -m llmfleet.entrypoints.cli bench serve --url "$url" --workload "$workload" --rate "$rates" --shape "$shape" \
  --results-dir "$out" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log"
status=${PIPESTATUS[0]}
echo "CPU time of the server's processes during the bench:"
python3 scripts/proc_cpu.py "$server" --since "$out/cpu-before.json" | tee "$out/cpu.txt"
rm -f "$out/cpu-before.json"
python3 -c "import urllib.request; print(urllib.request.urlopen('$url/metrics').read().decode())" >"$out/metrics.txt"

kill -TERM "$server"
wait "$server"
echo "server exit status $? (0 = drained cleanly)"
trap - EXIT
exit "$status"
