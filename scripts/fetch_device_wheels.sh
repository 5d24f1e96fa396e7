#!/usr/bin/env bash
# Downloads the wheels that the GPU machine's image lacks (it has no network) into .whl/, for `carry`.
# On the device: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection annotated-doc \
  typing-extensions opentelemetry-api msgspec pyzmq httptools uvloop xgrammar apache-tvm-ffi gguf
ls .whl
