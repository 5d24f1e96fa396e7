"""Snapshots of a collection: numpy columns, a msgpack of strings, and one faiss file per sealed segment.

A snapshot `snap-N/` covers every write logged in files before `wal-N`. It is written to `snap-N.tmp/`, each file
fsynced, then renamed; `CURRENT` (replaced atomically) names the live one, and only then are older snapshots and
logs removed, so a crash at any point leaves either the old or the new snapshot with all logs it needs.
"""
from __future__ import annotations

import os
import shutil

import msgspec
import numpy as np

from llmfleet.apps.retrieval.segments import Segment
from llmfleet.apps.retrieval.wal import fsync_dir, wal_numbers, wal_path

COLUMNS = ("vectors", "team", "doc", "alive")


def write_snapshot(folder: str, number: int, state: dict, segments: tuple[Segment, ...]) -> None:
    """Persist `state` (columns + "meta") and `segments` as snap-`number`, make it current, drop what it covers."""
    final = os.path.join(folder, f"snap-{number:08d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in COLUMNS:
        _durable(os.path.join(tmp, f"{name}.npy"), lambda f, a=state[name]: np.save(f, a))
    meta = {**state["meta"], "segments": [[s.start, s.stop] for s in segments]}
    _durable(os.path.join(tmp, "meta.msgpack"), lambda f: f.write(msgspec.msgpack.encode(meta)))
    for seg in segments:
        path = os.path.join(tmp, f"seg-{seg.start}-{seg.stop}.faiss")
        seg.save(path)
        _fsync_file(path)
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(folder)
    _durable(os.path.join(folder, "CURRENT.tmp"), lambda f: f.write(f"snap-{number:08d}\n".encode()))
    os.replace(os.path.join(folder, "CURRENT.tmp"), os.path.join(folder, "CURRENT"))
    fsync_dir(folder)
    for name in os.listdir(folder):
        if name.startswith("snap-") and name != os.path.basename(final):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    for old in wal_numbers(folder):
        if old < number:
            os.remove(wal_path(folder, old))


def read_snapshot(folder: str) -> tuple[int, dict, list[Segment]] | None:
    """(number, state, segments) of the current snapshot, None when there is none yet."""
    current = os.path.join(folder, "CURRENT")
    if not os.path.exists(current):
        return None
    name = open(current).read().strip()
    snap = os.path.join(folder, name)
    state = {col: np.load(os.path.join(snap, f"{col}.npy")) for col in COLUMNS}
    with open(os.path.join(snap, "meta.msgpack"), "rb") as file:
        state["meta"] = msgspec.msgpack.decode(file.read())
    segments = [Segment.load(os.path.join(snap, f"seg-{a}-{b}.faiss"), a, b) for a, b in state["meta"]["segments"]]
    return int(name[5:]), state, segments


def _durable(path: str, write) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _fsync_file(path: str) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())
