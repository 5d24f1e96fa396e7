#!/usr/bin/env bash
# On a GPU machine: the Triton kernels' GPU tests (pytest -m gpu), then scripts/bench_kernels.py.
# Logs and the bench JSON go under $OUT (default ./gpu_logs). Extra arguments go to the bench (e.g. --sweep).
# Where pytest is missing, wheels under .whl/kernels/ are installed into /tmp/site first.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if ! python3 -c "import pytest" 2>/dev/null && ls .whl/kernels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/kernels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
rc=0
python3 -m pytest tests/test_triton_attention.py tests/test_fused_kernels.py -m gpu -q -s -p no:cacheprovider 2>&1 \
    | tee "$OUT/tests.log" || rc=1
python3 scripts/bench_kernels.py --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log" || rc=1
exit $rc
