"""`llmfleet bench retrieval`: the vector index's recall@10 and search latency, unfiltered and tenant-filtered,
with upserts running concurrently, plus its build time.

Data: `--num-vectors` unit vectors in `--dim` dimensions drawn around `--clusters` random centres (gaussian
noise, seeded), standing in for sentence embeddings, which are clustered by topic. Each vector belongs to one of
`--tenants` tenants with Zipf(1) sizes (a few large tenants, many small ones), assigned independently of its
cluster: the hardest case for a filter inside the graph walk. Queries are fresh draws from the same distribution.
Ground truth is exact search (numpy) over the same rows, the tenant's rows for filtered queries; rows upserted
during the timed phases are not in it and are left out of the results before recall is counted.
One search at a time (single-threaded client), timed by the wall clock and by the searching thread's CPU time (the
latter shows the search's own cost on a machine whose cores are shared with other work), while a writer thread upserts `--upserts-per-s` chunks per second
through the write-ahead log (fsync per write), which also makes the maintenance thread seal and merge segments.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from llmfleet.bench.results import write_result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-vectors", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000, help="distinct queries per phase (cycled for its duration)")
    p.add_argument("--phase-seconds", type=float, default=30.0, help="how long each timed search phase runs")
    p.add_argument("--upserts-per-s", type=float, default=100.0)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--exact-below", type=int, default=4096)
    p.add_argument("--seal-rows", type=int, default=2048)
    p.add_argument("--path", default=None, help="folder for the collection (default: a temporary one)")
    p.add_argument("--device-name", default="cpu-2-core", help="the device field of the JSON record")
    p.add_argument("--results-dir", default="benchmarks/results")


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray, noise: float) -> np.ndarray:
    """`n` unit vectors, each a random centre plus gaussian noise, in blocks to bound the memory used."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        rows = centres[rng.integers(0, len(centres), stop - start)]
        rows = rows + noise * rng.standard_normal(rows.shape, dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def zipf_tenants(rng: np.random.Generator, n: int, tenants: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, tenants + 1)
    return rng.choice(tenants, size=n, p=weights / weights.sum()).astype(np.int32)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """[q, k] labels of the exact top-k by inner product, in blocks of queries."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + 64] = np.take_along_axis(top, order, axis=1)
    return out


class Upserter(threading.Thread):
    """Upserts one chunk at a time at `rate` per second until stopped; counts what it acknowledged."""

    def __init__(self, coll, make_vector, tenants: int, rate: float):
        super().__init__(daemon=True, name="bench-upserter")
        self.coll, self.make_vector, self.tenants, self.rate = coll, make_vector, tenants, rate
        self.done, self.latencies, self._halt = 0, [], threading.Event()

    def run(self) -> None:
        from llmfleet.apps.retrieval.types import Chunk

        rng, interval, next_at = np.random.default_rng(7), 1.0 / self.rate, time.perf_counter()
        while not self._halt.is_set():
            team = f"t{rng.integers(self.tenants)}"
            started = time.perf_counter()
            self.coll.upsert([Chunk(f"live-{self.done}", self.make_vector(), team, f"live-doc-{self.done}")])
            self.latencies.append(time.perf_counter() - started)
            self.done += 1
            next_at += interval
            self._halt.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def timed_phase(search, queries, truth, seconds: float, base: int) -> dict:
    """Cycle `queries` for `seconds`: latency percentiles over every search, recall@10 over the first pass."""
    latencies, cpu, recalls, i, end = [], [], [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end or i < len(queries):
        q = i % len(queries)
        started, started_cpu = time.perf_counter(), time.thread_time()
        hits = search(q, queries[q])
        latencies.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        if i < len(queries):
            recalls.append(_recall(hits[:10], truth[q], base))
        i += 1
    ms, cpu_ms = np.array(latencies) * 1000, np.array(cpu) * 1000
    return {"recall_at_10": round(float(np.mean(recalls)), 4), "searches": len(latencies),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 3),
            "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 3)}


def _recall(hits: list[int], truth: np.ndarray, base: int) -> float:
    """recall@10 against the exact top-10 of the base rows (ordered best first). A row upserted during the phase
    that ranks among the hits legitimately displaces the base's last one, so with l such hits the base part is
    judged against the exact top (10 - l); a padded truth (-1, tenants under 10 rows) counts what exists."""
    live = sum(label >= base for label in hits)
    want = [t for t in truth[:10 - live].tolist() if t >= 0]
    if not want:
        return 1.0
    return len(set(hits) & set(want)) / len(want)


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.retrieval_phases import run_bench

    record = run_bench(args)
    path = write_result(record, "retrieval", args.results_dir)
    print(path)
    for name in ("unfiltered", "filtered_exact", "filtered_hnsw", "filtered_all"):
        print(name, record["phases"].get(name))
    print("build_s", record["build_s"], "load_s", record["load_s"])
    return 0
