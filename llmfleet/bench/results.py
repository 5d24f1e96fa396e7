"""Benchmark records: one JSON file per run under benchmarks/results/<device-slug>/, with its provenance.

`write_result(record, kind)` adds the command line, the git commit, the device name and the date (keys the record
already has are kept, e.g. a "device" measured on another machine than the one writing the file), then writes
`<kind>-<workload>-<shape>-<timestamp>.json`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS_DIR = Path("benchmarks") / "results"


def slug(text: str) -> str:
    """Lowercase; runs of other characters than letters, digits and dots become one '-'."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-") or "unknown"


def device_name() -> str:
    """The first CUDA device's name, or "cpu"."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's hash, with "-dirty" when tracked files differ from it; "unknown" outside a git checkout.
    LLMFLEET_COMMIT names the commit where the tree was copied without .git (the GPU machines)."""
    if os.environ.get("LLMFLEET_COMMIT"):
        return os.environ["LLMFLEET_COMMIT"]
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def write_result(record: dict, kind: str, results_dir: Path | str = RESULTS_DIR) -> Path:
    """Add provenance to `record` (in place) and write it; `record` should name its "workload" and "shape"."""
    now = dt.datetime.now(dt.timezone.utc)
    record.setdefault("kind", kind)
    record.setdefault("command", shlex.join(["llmfleet", *sys.argv[1:]]))
    record.setdefault("commit", git_commit())
    record.setdefault("device", device_name())
    record.setdefault("date", now.isoformat(timespec="seconds"))
    folder = Path(results_dir) / slug(record["device"])
    folder.mkdir(parents=True, exist_ok=True)
    stem = "-".join([slug(kind), slug(record.get("workload", "none")), slug(record.get("shape", "none")),
                     now.strftime("%Y%m%dT%H%M%SZ")])
    path, n = folder / f"{stem}.json", 1
    while path.exists():  # two runs within the same second
        path, n = folder / f"{stem}-{n}.json", n + 1
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
