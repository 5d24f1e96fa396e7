#!/usr/bin/env bash
# Installs llmfleet from this checkout. On a machine without an NVIDIA GPU it first installs the CPU build of torch
# (torch==2.13.0), so that resolving llmfleet's `torch` requirement never pulls the multi-GB CUDA wheels.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --test   # the package and what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if ! command -v nvidia-smi >/dev/null 2>&1 && ! "$python" -c "import torch" >/dev/null 2>&1; then
  "$python" -m pip install -q "torch==2.13.0"
fi
"$python" -m pip install -q -e ".${extras}"
