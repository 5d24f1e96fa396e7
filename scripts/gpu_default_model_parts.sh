#!/usr/bin/env bash
# The default model's GGUF file (98 MB) is larger than what one GPU call may carry beside the tree (64 MiB in all),
# so it travels in parts over consecutive calls to the same warm machine (files from earlier calls stay there).
#   here:   bash scripts/gpu_default_model_parts.sh split   -> .smol1/ .. .smol4/ (git-excluded)
#   device: bash scripts/gpu_default_model_parts.sh stash   (every call: copies the carried part to /tmp/smol)
#   device: bash scripts/gpu_default_model_parts.sh join    -> /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf, checked
# Carry .smol1 (with .whl) in the first call, .smol2 and .smol3 in the next two, .smol4 in the one that runs
# (the tree itself is ~33 MB, so a part beside it stays under ~33 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
name=SmolLM2-135M-Instruct.Q4_1.gguf
sizes_mib=(1 31 31)   # the last part takes the rest
case "${1:-}" in
  split)
    src=$(python3 -c "from llmfleet.entrypoints.default_model import default_gguf_file; print(default_gguf_file())")
    skip=0
    for i in 1 2 3 4; do
      d=.smol$i
      grep -qx "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude
      rm -rf "$d" && mkdir -p "$d"
      if [ "$i" -lt 4 ]; then
        dd if="$src" of="$d/part" bs=1M skip="$skip" count="${sizes_mib[$((i - 1))]}" status=none
        skip=$((skip + sizes_mib[i - 1]))
      else
        dd if="$src" of="$d/part" bs=1M skip="$skip" status=none
      fi
    done
    sha256sum "$src" | cut -d' ' -f1 > .smol4/sha256
    ls -l .smol*/part ;;
  stash)
    mkdir -p /tmp/smol
    for i in 1 2 3 4; do if [ -f ".smol$i/part" ]; then cp ".smol$i/part" "/tmp/smol/part$i"; fi; done
    if [ -f .smol4/sha256 ]; then cp .smol4/sha256 /tmp/smol/sha256; fi
    ls -l /tmp/smol ;;
  join)
    cat /tmp/smol/part1 /tmp/smol/part2 /tmp/smol/part3 /tmp/smol/part4 > "/tmp/smol/$name"
    echo "$(cat /tmp/smol/sha256)  /tmp/smol/$name" | sha256sum -c - ;;
  *) echo "usage: $0 split|stash|join" >&2; exit 2 ;;
esac
