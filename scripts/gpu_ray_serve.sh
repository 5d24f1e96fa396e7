#!/usr/bin/env bash
# On a GPU machine with ray[serve] installed: run `llmfleet ray serve` with REPLICAS engine replicas of SHAPE, one GPU
# each, wait until a completion is answered, drive it with `llmfleet bench serve` at the given rates (the same
# workload as scripts/gpu_serve_bench.sh against one `llmfleet serve`, so the two results compare), then stop it
# with SIGTERM (Ray drains the replicas and deletes the app).
#   bash scripts/gpu_ray_serve.sh                                # qwen3-0.6b, 1 replica, W3 at 8,16,32 req/s
#   REPLICAS=2 RATES=16,32,64 bash scripts/gpu_ray_serve.sh      # on 2 GPUs
#   POLICY=power-of-two REPLICAS=2 bash scripts/gpu_ray_serve.sh # Ray Serve's own router, for comparison
# Result JSONs go under $OUT/<device>/ (default /tmp/llmfleet-ray-serve), with the app's log and its fleet.yaml.
set -uo pipefail
cd "$(dirname "$0")/.."
shape=${SHAPE:-qwen3-0.6b}
replicas=${REPLICAS:-1}
workload=${WORKLOAD:-W3}
rates=${RATES:-8,16,32}
port=${PORT:-8000}
policy=${POLICY:-prefix-aware}
out=${OUT:-/tmp/llmfleet-ray-serve}
mkdir -p "$out"
source scripts/device_env.sh
url="http://127.0.0.1:$port"

cat >"$out/fleet.yaml" <<EOF
port: $port
policy: $policy
models:
  bench:
    - version: v1
      engine: {model: $shape, load_format: dummy, device: cuda}
      server: {max_waiting_requests: 1000000}
      replicas: {min: $replicas, max: $replicas, num_gpus: 1, num_cpus: 4, max_ongoing_requests: 100000}
EOF
python3 -m llmfleet.entrypoints.cli ray serve --config "$out/fleet.yaml" >"$out/ray.log" 2>&1 &
app=$!
trap 'kill -TERM $app 2>/dev/null; sleep 20; kill -KILL $app 2>/dev/null' EXIT

start=$(date +%s)
until curl -sf -m 30 "$url/v1/completions" -H 'content-type: application/json' \
      -d '{"model": "bench", "prompt": "hello", "max_tokens": 1}' >/dev/null; do
  if ! kill -0 "$app" 2>/dev/null; then
    echo "llmfleet ray serve exited during startup:"; tail -n 50 "$out/ray.log"; exit 1
  fi
  sleep 2
done
echo "app ready in $(( $(date +%s) - start )) s ($replicas replica(s), $policy)"

python3 -m llmfleet.entrypoints.cli bench serve --url "$url" --workload "$workload" --rate "$rates" \
  --model bench --shape "$shape-ray-serve-x$replicas-$policy" --results-dir "$out" ${BENCH_ARGS:-} 2>&1 \
  | tee "$out/bench.log"
exit "${PIPESTATUS[0]}"
