"""`llmfleet bench gateway`: the latency the gateway adds, and the request rate it sustains.

The same load runs straight at a backend and through a gateway in front of it; the difference of the latency
percentiles is what the gateway adds. By default the backend is `llmfleet.bench.fixed_backend` (a fixed answer at
once, so the difference is the proxy's own cost) and both it and the gateway run as child processes on this
machine; `--backend URL` measures over a running server instead (e.g. a real `llmfleet serve` replica).

The load generator is the gateway's own replica client (llmfleet.gateway.client): an httpx client costs more CPU
per request than the gateway itself and, on a small machine, caps the rate before the gateway does.

Phases: 200 requests one at a time (no queueing), open-loop Poisson arrivals at `--rate` for `--duration` s, streamed (time to first event and to the end of
the stream); then a closed loop of `--concurrency` workers sending short non-streaming completions for
`--duration` s through the gateway (requests per second, errors).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import uvloop

from llmfleet.bench.results import write_result
from llmfleet.gateway.client import ReplicaClient, ReplicaError

ROOT = Path(__file__).resolve().parents[2]
_JSON = {"content-type": "application/json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop arrivals per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers for the throughput phase")
    parser.add_argument("--backend", default=None, help="a running OpenAI-compatible server (default: a fixed one)")
    parser.add_argument("--model", default=None, help="model name to send (default: the backend's first)")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--policy", default="prefix-aware")
    parser.add_argument("--results-dir", default=None, help="default benchmarks/results")


def run(args: argparse.Namespace) -> int:
    procs: list[subprocess.Popen] = []
    try:
        backend = args.backend or _start(procs, ["-m", "llmfleet.bench.fixed_backend"], "fixed")
        gateway = _start(procs, ["-m", "llmfleet", "gateway", "--replica", backend, "--policy", args.policy,
                                 "--log-level", "warning"], "gateway")
        time.sleep(1.0)   # the gateway's first health check
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            record = runner.run(_measure(args, backend, gateway))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    record["backend"] = "llmfleet.bench.fixed_backend" if args.backend is None else args.backend
    record["policy"], record["device"] = args.policy, f"cpu-{os.cpu_count()}-core"
    path = write_result(record, "gateway", args.results_dir or "benchmarks/results")
    print(_summary(record))
    print(f"wrote {path}")
    return 0


async def _measure(args, backend: str, gateway: str) -> dict:
    model = args.model or await _first_model(backend)
    body = {"model": model, "prompt": "hello", "max_tokens": args.max_tokens}
    alone = {name: await _sequential(url, 200, body) for name, url in (("direct", backend), ("gateway", gateway))}
    direct = await _open_loop(backend, args.rate, args.duration, body)
    through = await _open_loop(gateway, args.rate, args.duration, body)
    throughput = await _closed_loop(gateway, args.concurrency, args.duration, body)
    added = {f"{key}_ms": round((through[key] - direct[key]) * 1e3, 3) for key in ("p50", "p90", "p99")}
    return {"workload": f"open-loop-{args.rate:g}rps-stream", "shape": f"{args.max_tokens}-tokens", "model": model,
            "rate": args.rate, "duration_s": args.duration, "direct": _ms(direct), "gateway": _ms(through),
            "added_latency": added, "throughput": throughput, "sequential": alone,
            "sequential_added_p50_ms": round(alone["gateway"]["p50_ms"] - alone["direct"]["p50_ms"], 3),
            "gateway_internal_mean_ms": await _internal_mean_ms(gateway)}


async def _open_loop(url: str, rate: float, duration: float, body: dict) -> dict:
    """Poisson arrivals; each request streams; latency = send to the end of the stream."""
    rng = random.Random(0)
    client = ReplicaClient(read_timeout_s=30)
    await _one(client, url, body)   # warm the connection pool
    tasks, start, at = [], time.perf_counter(), 0.0
    while at < duration:
        at += rng.expovariate(rate)
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, url, body)))
    results = await asyncio.gather(*tasks)
    await client.aclose()
    ok = [r for r in results if r is not None]
    lat = np.array([r[1] for r in ok]) if ok else np.zeros(1)
    first = np.array([r[0] for r in ok]) if ok else np.zeros(1)
    return {"requests": len(results), "errors": len(results) - len(ok), "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)), "p99": float(np.percentile(lat, 99)),
            "first_event_p50": float(np.percentile(first, 50)), "first_event_p99": float(np.percentile(first, 99)),
            "achieved_rate": len(results) / (time.perf_counter() - start)}


async def _sequential(url: str, count: int, body: dict) -> dict:
    """One streamed request at a time: latency without any queueing."""
    client = ReplicaClient(read_timeout_s=30)
    await _one(client, url, body)
    results = [await _one(client, url, body) for _ in range(count)]
    await client.aclose()
    lat = np.array([r[1] for r in results if r is not None] or [0.0])
    return {"requests": count, "errors": sum(r is None for r in results),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3)}


async def _one(client: ReplicaClient, url: str, body: dict, stream: bool = True) -> tuple[float, float] | None:
    start = time.perf_counter()
    first = None
    try:
        response = await client.send("POST", url, "/v1/completions", json.dumps({**body, "stream": stream}).encode(),
                                     _JSON)
        if response.status_code != 200:
            await response.read()
            return None
        async for chunk in response.chunks():
            if first is None and chunk:
                first = time.perf_counter() - start
    except ReplicaError:
        return None
    return first or 0.0, time.perf_counter() - start


async def _closed_loop(url: str, workers: int, duration: float, body: dict) -> dict:
    """`workers` clients back to back, short non-streaming completions: requests per second and errors."""
    counts = {"ok": 0, "errors": 0}
    client = ReplicaClient(read_timeout_s=30)
    deadline = time.perf_counter() + duration

    async def worker():
        while time.perf_counter() < deadline:
            counts["ok" if await _one(client, url, body, stream=False) is not None else "errors"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return {"workers": workers, "requests": counts["ok"] + counts["errors"], "errors": counts["errors"],
            "requests_per_s": round(counts["ok"] / elapsed, 1)}


async def _internal_mean_ms(url: str) -> float:
    """The gateway's own view: mean of llmfleet_gateway_added_latency_seconds (routing and bookkeeping)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url + "/metrics")).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("llmfleet_gateway_added_latency_seconds_")}
    count = values.get("llmfleet_gateway_added_latency_seconds_count", 0.0)
    return round(values.get("llmfleet_gateway_added_latency_seconds_sum", 0.0) / count * 1e3, 3) if count else 0.0


async def _first_model(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url + "/v1/models")).json()["data"][0]["id"]


def _start(procs: list, argv: list[str], name: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs.append(subprocess.Popen([sys.executable, *argv, "--port", str(port)], env=env, cwd=ROOT))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the {name} process did not start on {url}")


def _ms(stats: dict) -> dict:
    return {k: (round(v * 1e3, 3) if k.startswith(("p", "first")) else v) for k, v in stats.items()}


def _summary(record: dict) -> str:
    d, g, a = record["direct"], record["gateway"], record["added_latency"]
    return (f"one at a time: added p50 {record['sequential_added_p50_ms']} ms | "
            f"direct p50 {d['p50']} ms p99 {d['p99']} ms | gateway p50 {g['p50']} ms p99 {g['p99']} ms | "
            f"added p50 {a['p50_ms']} ms p99 {a['p99_ms']} ms | closed loop "
            f"{record['throughput']['requests_per_s']} req/s, {record['throughput']['errors']} errors")
