"""Tenancy's costs on this CPU, written as JSON under benchmarks/results/cpu-tenancy/:
  - a cached key lookup (HMAC of the bearer token + LRU hit + checks) over 10,000 keys: p50/p99;
  - what the middleware adds to a non-streaming completion on an in-process ASGI app (no network): p50/p99.
    python3 scripts/bench_tenancy.py [--requests 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tenancy_app import FixedApp  # noqa: E402

from llmfleet.tenancy import TenancyConfig, TenancyMiddleware  # noqa: E402
from llmfleet.tenancy.keys import key_hint, new_id, new_key  # noqa: E402
from llmfleet.tenancy.schema import keys  # noqa: E402

MASTER = "sk-bench-master-key"


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered) * 1e6, 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 2), "n": len(ordered)}


async def _make_keys(middleware: TenancyMiddleware, count: int) -> list[str]:
    tenancy, now, made = middleware.tenancy, time.time(), []
    rows = []
    for _ in range(count):
        key = new_key()
        made.append(key)
        rows.append({"key_hash": tenancy.hash(key), "key_id": new_id(), "key_hint": key_hint(key), "models": [],
                     "metadata": {}, "blocked": False, "spend": 0.0, "period_spend": 0.0, "period_index": 0,
                     "created_at": now, "updated_at": now})
    async with tenancy.store.engine.begin() as conn:
        await conn.execute(keys.insert(), rows)
    return made


async def _lookups(middleware: TenancyMiddleware, made: list[str], n: int) -> dict:
    for key in made:  # warm the cache
        await middleware.tenancy.authenticate(key)
    samples = []
    for _ in range(n):
        key = random.choice(made)
        start = time.perf_counter()
        await middleware.tenancy.authenticate(key)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


async def _request(app, key: str) -> float:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 16})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body.encode()}

    async def send(message):
        sent.append(message)

    start = time.perf_counter()
    await app(scope, receive, send)
    return time.perf_counter() - start


async def _overhead(middleware: TenancyMiddleware, bare: FixedApp, key: str, n: int) -> dict:
    with_tenancy = [await _request(middleware, key) for _ in range(n)]
    without = [await _request(bare, key) for _ in range(n)]
    return {"with": _percentiles(with_tenancy), "without": _percentiles(without),
            "added_p50_us": round((statistics.median(with_tenancy) - statistics.median(without)) * 1e6, 2)}


async def main(args: argparse.Namespace) -> dict:
    folder = tempfile.mkdtemp(prefix="llmfleet-bench-tenancy-")
    # A TTL longer than the warm-up (10,000 database reads), so that the timed lookups are cache hits.
    config = TenancyConfig(master_key=MASTER, database_url=f"sqlite:///{folder}/keys.db", cache_ttl_s=600.0,
                           prices={"default": {"input": 1.0, "output": 2.0}})
    app = FixedApp()
    middleware = TenancyMiddleware(app, config)
    await middleware.tenancy.start()
    try:
        made = await _make_keys(middleware, 10_000)
        lookup = await _lookups(middleware, made, args.requests * 10)
        overhead = await _overhead(middleware, app, made[0], args.requests)
    finally:
        await middleware.tenancy.close()
    return {"bench": "tenancy", "keys": 10_000, "key_lookup_cached": lookup, "middleware_overhead": overhead,
            "database": "sqlite", "cache_ttl_s": config.cache_ttl_s, "python": platform.python_version(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    result = asyncio.run(main(parser.parse_args()))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ROOT / "benchmarks" / "results" / "cpu-tenancy" / f"tenancy-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
