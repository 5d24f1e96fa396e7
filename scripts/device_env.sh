# Sourced by the GPU-machine scripts from the repo root: the environment those machines need (NVLink multicast
# off, unbuffered Python), the wheels their image lacks (scripts/fetch_device_wheels.sh puts them in .whl/), and
# this checkout on PYTHONPATH. The machine's copy of .git may be stale: pass LLMFLEET_COMMIT=<commit> so that result
# JSONs name the commit that ran.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
