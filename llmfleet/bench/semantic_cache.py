"""`llmfleet bench semantic-cache`: the semantic cache on its paraphrase set (apps/cache/paraphrases.py), with
embeddings from a served model (all-MiniLM-L6-v2 by default): hit rate on paraphrases, false hits on near misses
and on all lookups, per threshold with and without the near-miss guard, and the lookup time at the default
threshold, with the set's anchors and with `--scale` entries in one tenant's namespace.

A hit is right when the stored prompt asks what the query asks (same template and slots), wrong otherwise."""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding-url", required=True, help="server with /v1/embeddings (llmfleet serve)")
    parser.add_argument("--embedding-model", default=None)
    parser.add_argument("--data", default=None, help="the paraphrase JSONL (default: the built-in set)")
    parser.add_argument("--scale", type=int, default=10_000, help="entries in one namespace for the latency run")
    parser.add_argument("--device", default=None, help="device name recorded in the result (default: detected)")


async def _embed_all(url: str, model: str | None, texts: list[str], timed: int = 100) -> tuple[dict, list[float]]:
    """Every text's vector (in batches of 32), and the time of `timed` single-text calls (what a lookup pays)."""
    from llmfleet.apps.endpoint import Endpoint

    endpoint, vectors, seconds = Endpoint(url), {}, []
    try:
        for i in range(0, len(texts), 32):
            batch = texts[i:i + 32]
            vectors.update(zip(batch, await endpoint.embed(model, batch)))
        for text in texts[:timed]:
            started = time.perf_counter()
            await endpoint.embed(model, [text])
            seconds.append(time.perf_counter() - started)
    finally:
        await endpoint.close()
    return vectors, seconds


async def _evaluate(rows: list[dict], vectors: dict, threshold: float, guard: bool) -> dict:
    from llmfleet.apps.cache.cache import SemanticCache
    from llmfleet.apps.cache.config import CacheConfig
    from llmfleet.apps.cache.keys import CacheKeys

    cache = SemanticCache(CacheConfig(threshold=threshold, guard=guard, max_entries=1 << 20))
    meaning_of = {}
    for row in rows:
        keys = CacheKeys(f"x:{row['anchor']}", "ns", row["anchor"], False)
        if row["anchor"] not in meaning_of:
            entry = await cache.put("t", keys, b"{}", vectors[row["anchor"]])
            meaning_of[entry.entry_id] = row["anchor_meaning"]
    counts = {"paraphrase": [0, 0, 0], "near_miss": [0, 0, 0]}  # lookups, right hits, wrong hits
    seconds = []
    for row in rows:
        keys = CacheKeys(f"q:{row['query']}", "ns", row["query"], False)
        started = time.perf_counter()
        found = await cache.nearest("t", keys, vectors[row["query"]], time.time())
        seconds.append(time.perf_counter() - started)
        tally = counts[row["kind"]]
        tally[0] += 1
        if found.entry is not None:
            tally[1 if meaning_of[found.entry.entry_id] == row["query_meaning"] else 2] += 1
    para, near = counts["paraphrase"], counts["near_miss"]
    return {"threshold": threshold, "guard": guard, "paraphrase_hit_rate": para[1] / para[0],
            "paraphrase_wrong_hits": para[2], "near_miss_false_hit_rate": near[2] / near[0],
            "near_miss_right_hits": near[1],
            "false_hit_rate_all_lookups": (para[2] + near[2]) / (para[0] + near[0]),
            "lookups": para[0] + near[0], "entries": len(cache.store),
            "lookup_p50_ms": 1e3 * float(np.percentile(seconds, 50)),
            "lookup_p99_ms": 1e3 * float(np.percentile(seconds, 99))}


async def _scale_latency(rows: list[dict], vectors: dict, size: int) -> dict:
    """p50/p99 of one guarded semantic lookup with `size` entries in the namespace (the set's anchors, then
    random unit vectors)."""
    from llmfleet.apps.cache.cache import SemanticCache
    from llmfleet.apps.cache.config import CacheConfig
    from llmfleet.apps.cache.keys import CacheKeys

    cache = SemanticCache(CacheConfig(max_entries=size + 1))
    rng = np.random.default_rng(0)
    anchors = sorted({row["anchor"] for row in rows})
    for i in range(size):
        text = anchors[i] if i < len(anchors) else f"filler prompt {i}"
        vector = vectors[text] if i < len(anchors) else rng.standard_normal(384).astype(np.float32)
        await cache.put("t", CacheKeys(f"x{i}", "ns", text, False), b"{}", vector / np.linalg.norm(vector))
    seconds, cpu = [], []
    for _ in range(4):
        for row in rows:
            keys = CacheKeys("q", "ns", row["query"], False)
            started, started_cpu = time.perf_counter(), time.thread_time()
            await cache.nearest("t", keys, vectors[row["query"]], time.time())
            seconds.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
    # wall time includes the scheduler's preemptions on a shared machine; CPU time is the lookup's own work
    return {"entries": size, "lookups": len(seconds), "lookup_p50_ms": 1e3 * float(np.percentile(seconds, 50)),
            "lookup_p99_ms": 1e3 * float(np.percentile(seconds, 99)),
            "lookup_cpu_p50_ms": 1e3 * float(np.percentile(cpu, 50)),
            "lookup_cpu_p99_ms": 1e3 * float(np.percentile(cpu, 99))}


async def _bench(args: argparse.Namespace) -> dict:
    from llmfleet.apps.cache.config import DEFAULT_THRESHOLD
    from llmfleet.apps.cache.paraphrases import DATA

    with open(args.data or DATA, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = sorted({row["anchor"] for row in rows} | {row["query"] for row in rows})
    vectors, embed_s = await _embed_all(args.embedding_url, args.embedding_model, texts)
    dev = [r for r in rows if r["split"] == "dev"]
    test = [r for r in rows if r["split"] == "test"]
    sweep = [await _evaluate(dev, vectors, t, g) for g in (True, False) for t in THRESHOLDS]
    at_default = {"guard": await _evaluate(test, vectors, DEFAULT_THRESHOLD, True),
                  "no_guard": await _evaluate(test, vectors, DEFAULT_THRESHOLD, False)}
    import os

    return {"workload": "paraphrases", "shape": "all-minilm-l6-v2", "default_threshold": DEFAULT_THRESHOLD,
            "load_average_1m": os.getloadavg()[0],
            "pairs": len(rows), "paraphrase_pairs": sum(r["kind"] == "paraphrase" for r in rows),
            "near_miss_pairs": sum(r["kind"] == "near_miss" for r in rows),
            "test": at_default, "dev_sweep": sweep, "scale": await _scale_latency(test, vectors, args.scale),
            "embedding_call_ms": {"p50": 1e3 * float(np.percentile(embed_s, 50)),
                                  "p99": 1e3 * float(np.percentile(embed_s, 99)), "calls": len(embed_s)}}


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.results import write_result

    record = asyncio.run(_bench(args))
    if args.device:
        record["device"] = args.device
    path = write_result(record, "semantic-cache")
    test = record["test"]["guard"]
    print(f"threshold {record['default_threshold']}: paraphrase hit rate {test['paraphrase_hit_rate']:.3f}, "
          f"near-miss false hits {test['near_miss_false_hit_rate']:.4f}, all-lookup false hits "
          f"{test['false_hit_rate_all_lookups']:.4f}, lookup p99 {record['scale']['lookup_p99_ms']:.2f} ms (CPU "
          f"{record['scale']['lookup_cpu_p99_ms']:.2f} ms) at "
          f"{record['scale']['entries']} entries; wrote {path}")
    return 0
