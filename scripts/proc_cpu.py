"""CPU seconds used by a process and its descendants, from /proc (Linux), per process.

    python3 scripts/proc_cpu.py PID > before.json; ...; python3 scripts/proc_cpu.py PID --since before.json

With --since, prints each process's CPU seconds since the snapshot and its share of one core over that wall time:
whether the API server or the engine core is the one saturating a core under load.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return kids


def snapshot(root: int) -> dict:
    tick = os.sysconf("SC_CLK_TCK")
    procs, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
        except OSError:
            continue
        procs[str(pid)] = {"cmd": cmd, "cpu_s": (int(fields[11]) + int(fields[12])) / tick}
        todo += _children(pid)
    return {"time": time.monotonic(), "procs": procs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("pid", type=int)
    p.add_argument("--since", help="a snapshot this script printed earlier")
    args = p.parse_args()
    now = snapshot(args.pid)
    if not args.since:
        print(json.dumps(now))
        return
    with open(args.since) as f:
        before = json.load(f)
    wall = now["time"] - before["time"]
    for pid, proc in now["procs"].items():
        used = proc["cpu_s"] - before["procs"].get(pid, {"cpu_s": 0.0})["cpu_s"]
        print(f"pid {pid}: {used:8.1f} CPU s over {wall:.1f} s wall = {100 * used / wall:5.1f}% of a core  {proc['cmd']}")


if __name__ == "__main__":
    main()
