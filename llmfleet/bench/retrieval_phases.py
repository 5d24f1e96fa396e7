"""The phases of `llmfleet bench retrieval` (retrieval.py has the data, the upserter and the timing)."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from llmfleet.apps.retrieval.collection import Collection
from llmfleet.apps.retrieval.params import IndexParams
from llmfleet.apps.retrieval.types import Chunk, Reader
from llmfleet.bench.retrieval import Upserter, clustered, exact_top, timed_phase, zipf_tenants

NOISE = 0.6   # per-coordinate noise around the centres (unit-norm centres scaled to the noise's norm)


def run_bench(args) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32) / np.sqrt(args.dim) * NOISE * 20
    vectors = clustered(rng, args.num_vectors, centres, NOISE)
    tenants = zipf_tenants(rng, args.num_vectors, args.tenants)
    params = IndexParams(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                         exact_below=args.exact_below, seal_rows=args.seal_rows)
    coll = Collection(args.dim, args.path or tempfile.mkdtemp(prefix="bench-retrieval-"), params)
    load_s, build_s = _load(coll, vectors, tenants)
    queries = clustered(np.random.default_rng(1), args.queries, centres, NOISE)
    truth = exact_top(vectors, queries, 10)
    live = np.random.default_rng(2)
    upserter = Upserter(coll, lambda: clustered(live, 1, centres, NOISE)[0], args.tenants, args.upserts_per_s)
    upserter.start()
    phases = {"unfiltered": timed_phase(lambda q, v: _labels(coll, v, None), queries, truth,
                                        args.phase_seconds, args.num_vectors)}
    phases.update(_filtered_phases(coll, vectors, tenants, queries, args))
    upserter.stop()
    sizes = np.bincount(tenants, minlength=args.tenants)
    upsert_ms = np.array(upserter.latencies) * 1000
    coll.close()
    return {"workload": f"clustered-{args.clusters}-zipf-tenants-{args.tenants}",
            "shape": f"{args.num_vectors}x{args.dim}", "device": args.device_name, "library": _library(),
            "params": {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search,
                       "exact_below": args.exact_below, "seal_rows": args.seal_rows, "metric": "inner product"},
            "load_s": round(load_s, 2), "build_s": round(build_s, 2), "phases": phases,
            "tenant_sizes": {"largest": int(sizes.max()), "median": int(np.median(sizes)),
                             "smallest": int(sizes.min()),
                             "searched_by_filtered_hnsw": int(sum(
                                 not coll.params.exact_cheaper(int(s), args.num_vectors, 10) for s in sizes))},
            "concurrent_upserts": {"count": upserter.done, "target_per_s": args.upserts_per_s,
                                   "p99_ms": round(float(np.percentile(upsert_ms, 99)), 3) if len(upsert_ms) else None},
            "segments_after": [s.size for s in coll.view.segments],
            "load_average_1m_at_end": round(os.getloadavg()[0], 2), "cpu_cores": os.cpu_count()}


def _load(coll, vectors, tenants) -> tuple[float, float]:
    """Upsert every row through the log with sealing paused, then build one HNSW graph over them."""
    started = time.perf_counter()
    with coll.bulk_load():
        for start in range(0, len(vectors), 20000):
            stop = min(len(vectors), start + 20000)
            coll.upsert([Chunk(f"c{i}", vectors[i], f"t{tenants[i]}", f"d{i // 16}") for i in range(start, stop)])
    loaded = time.perf_counter()
    coll.wait_built()
    return loaded - started, time.perf_counter() - loaded


def _labels(coll, vector, reader) -> list[int]:
    hits = coll.search_all(vector, 10) if reader is None else coll.search(vector, 10, reader)
    return [int(h.chunk_id[1:]) if h.chunk_id[0] == "c" else 1 << 62 for h in hits]


def _filtered_phases(coll, vectors, tenants, queries, args) -> dict:
    """Tenant-filtered searches: small tenants (exact route), large ones (filtered HNSW), and all tenants."""
    sizes = np.bincount(tenants, minlength=args.tenants)
    exact = np.array([coll.params.exact_cheaper(int(s), len(vectors), 10) for s in sizes])
    large = np.flatnonzero(~exact)
    small = np.flatnonzero(exact & (sizes >= 10))
    pick = np.random.default_rng(3)
    out = {}
    for name, pool in (("filtered_exact", small), ("filtered_hnsw", large),
                       ("filtered_all", np.flatnonzero(sizes >= 10))):
        if len(pool) == 0:
            continue
        chosen = pool[pick.integers(0, len(pool), len(queries))]
        truth = np.stack([_tenant_truth(vectors, tenants, t, q) for t, q in zip(chosen, queries)])
        readers = [Reader(f"t{t}") for t in chosen]
        out[name] = timed_phase(lambda q, v: _labels(coll, v, readers[q]), queries, truth, args.phase_seconds,
                                args.num_vectors)
        out[name]["tenants"] = len(pool)
    return out


def _tenant_truth(vectors, tenants, tenant, query) -> np.ndarray:
    rows = np.flatnonzero(tenants == tenant)
    top = rows[np.argsort(-(vectors[rows] @ query))[:10]]
    return np.pad(top, (0, 10 - len(top)), constant_values=-1)


def _library() -> str:
    import faiss

    return f"faiss-cpu {faiss.__version__} IndexHNSWFlat"
