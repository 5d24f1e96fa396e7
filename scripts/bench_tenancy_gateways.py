"""Limits and budgets across 4 `llmfleet gateway` processes sharing one Redis and one PostgreSQL, over two
fixed-latency backends, under load from one client spread over all 4 gateways; JSON under
benchmarks/results/cpu-tenancy/.
    python3 scripts/bench_tenancy_gateways.py [--seconds 120] [--rate 5] [--gateways 4]

Keys: "rpm" (rpm_limit 100), "tpm" (tpm_limit 600: 120 requests of 5 tokens), "budget" (max_budget $0.5: 55
requests), each offered `--rate` requests per second (3x what the rpm and tpm limits admit), and "burst": 50
concurrent requests at once against a budget that fits 10. What was admitted is read back from the spend rows in PostgreSQL (each row's started_at is
its admission time), after the gateways stopped and wrote their last batches: requests (and tokens) per minute
window against the limit, spend against the budget, as overshoot in percent.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmfleet.bench.results import write_result  # noqa: E402
from tests.fleet_procs import fixed_backend, gateway_proc  # noqa: E402
from tests.services import running_postgres, running_redis  # noqa: E402

MASTER = "sk-bench-master-gateways"
PRICE = {"input": 1000.0, "output": 2000.0}   # dollars per 1M tokens: a fixed answer (1 + 4 tokens) costs $0.009
# The estimate at admission is exactly the answer's usage (the 4 characters of "user" -> 1 prompt token, 4 asked,
# 4 answered), so a request's reservation is its cost: the burst's budget fits 10 requests however they overlap.
BODY = {"model": "fixed", "messages": [{"role": "user", "content": ""}], "max_tokens": 4}
RESERVATION = (1 * PRICE["input"] + 4 * PRICE["output"]) / 1e6
KEYS = {"rpm": {"rpm_limit": 100}, "tpm": {"tpm_limit": 600}, "budget": {"max_budget": 0.5},
        "burst": {"max_budget": round(10 * RESERVATION + 1e-6, 6)}}


def _start(folder: Path, redis: str, database: str, gateways: int):
    prices = folder / "prices.json"
    prices.write_text(json.dumps({"fixed": PRICE}))
    backends = [fixed_backend(tokens=4).start() for _ in range(2)]
    for proc in backends:
        proc.wait_ready(60)
        proc.control(delay_s=0.05)  # requests stay in flight 50 ms: reservations overlap
    flags = ("--master-key", MASTER, "--database-url", database, "--redis-url", redis, "--price-file", str(prices))
    procs = [gateway_proc([b.url for b in backends], *flags).start() for _ in range(gateways)]
    for proc in procs:
        proc.wait_ready(120)
    return backends, procs


async def _offer(client: httpx.AsyncClient, urls: list[str], key: str, rate: float, seconds: float,
                 statuses: Counter) -> None:
    """An open loop: `rate` requests per second for `seconds`, round-robin over the gateways."""
    tasks, start, i = [], time.monotonic(), 0
    while time.monotonic() - start < seconds:
        url = urls[i % len(urls)]
        tasks.append(asyncio.create_task(_one(client, url, key, statuses)))
        i += 1
        await asyncio.sleep(max(0.0, i / rate - (time.monotonic() - start)))
    await asyncio.gather(*tasks)


async def _one(client: httpx.AsyncClient, url: str, key: str, statuses: Counter) -> None:
    try:
        answer = await client.post(url + "/v1/chat/completions", json=BODY,
                                   headers={"authorization": f"Bearer {key}"})
        statuses[answer.status_code] += 1
    except httpx.HTTPError:
        statuses["error"] += 1


async def _load(urls: list[str], keys: dict, rate: float, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    statuses = {name: Counter() for name in keys}
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        burst = [_one(client, urls[i % len(urls)], keys["burst"], statuses["burst"]) for i in range(50)]
        await asyncio.gather(*burst)
        _say(f"burst: {dict(statuses['burst'])}")
        await asyncio.gather(*(_offer(client, urls, keys[name], rate, seconds, statuses[name])
                               for name in ("rpm", "tpm", "budget")))
    return {name: dict(counts) for name, counts in statuses.items()}


async def _rows(database: str, key_ids: dict) -> dict:
    from sqlalchemy import select

    from llmfleet.tenancy.schema import spend_logs
    from llmfleet.tenancy.store import Store

    store = await Store.open(database)
    try:
        async with store.engine.connect() as conn:
            found = (await conn.execute(select(spend_logs.c.key_id, spend_logs.c.started_at, spend_logs.c.status,
                                               spend_logs.c.prompt_tokens, spend_logs.c.completion_tokens,
                                               spend_logs.c.cost))).all()
    finally:
        await store.close()
    names = {v: k for k, v in key_ids.items()}
    rows = defaultdict(list)
    for row in found:
        if row.key_id in names and row.status == 200:
            rows[names[row.key_id]].append(row)
    return rows


def _windows(rows, value) -> dict[int, float]:
    per = defaultdict(float)
    for row in rows:
        per[int(row.started_at // 60)] += value(row)
    return dict(sorted(per.items()))


def _overshoot(admitted: float, limit: float) -> float:
    return round(max(0.0, admitted - limit) / limit * 100, 3)


def _report(rows: dict, statuses: dict) -> dict:
    rpm = _windows(rows["rpm"], lambda r: 1)
    tpm = _windows(rows["tpm"], lambda r: r.prompt_tokens + r.completion_tokens)
    spent = sum(r.cost for r in rows["budget"])
    burst_spent = sum(r.cost for r in rows["burst"])
    limit = KEYS["budget"]["max_budget"]
    return {
        "rpm": {"limit": 100, "admitted_per_minute_window": list(rpm.values()), "max_window": max(rpm.values()),
                "overshoot_pct": _overshoot(max(rpm.values()), 100), "statuses": statuses["rpm"]},
        "tpm": {"limit": 600, "tokens_per_minute_window": list(tpm.values()), "max_window": max(tpm.values()),
                "overshoot_pct": _overshoot(max(tpm.values()), 600), "statuses": statuses["tpm"]},
        "budget": {"max_budget": limit, "spent": round(spent, 6), "admitted": len(rows["budget"]),
                   "overshoot_pct": _overshoot(spent, limit), "statuses": statuses["budget"]},
        "burst": {"concurrent": 50, "max_budget": KEYS["burst"]["max_budget"], "reservation": RESERVATION,
                  "fits": 10, "admitted": len(rows["burst"]), "spent": round(burst_spent, 6),
                  "statuses": statuses["burst"]}}


async def _keys(url: str) -> tuple[dict, dict]:
    keys, ids = {}, {}
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {MASTER}"}) as admin:
        for name, limits in KEYS.items():
            made = (await admin.post("/key/generate", json={"key_alias": name, **limits})).json()
            keys[name], ids[name] = made["key"], made["key_id"]
    return keys, ids


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second offered per key")
    parser.add_argument("--gateways", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="llmfleet-bench-gateways-"))
    with running_redis() as redis, running_postgres() as database:
        if redis is None:
            sys.exit("redis-server is not installed")
        backends, gateways = _start(folder, redis, database, args.gateways)
        try:
            _say(f"{len(gateways)} gateways up; loading for {args.seconds} s")
            keys, ids = asyncio.run(_keys(gateways[0].url))
            started = time.time()
            statuses = asyncio.run(_load([g.url for g in gateways], keys, args.rate, args.seconds))
            elapsed = time.time() - started
        finally:
            _say("stopping the gateways")
            codes = [g.stop(60) for g in gateways]  # SIGTERM: each writes its last spend batch
            for proc in backends:
                proc.kill()
        rows = asyncio.run(_rows(database, ids))
    result = {"bench": "tenancy-gateways", "gateways": args.gateways, "backends": 2, "backend_delay_s": 0.05,
              "seconds": round(elapsed, 1), "offered_rate_per_key": args.rate, "shared": "redis + postgresql",
              "gateway_exit_codes": codes, **_report(rows, statuses), "python": platform.python_version(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result.update(workload=f"{args.gateways}-gateways", shape="redis-postgresql", device="cpu-tenancy",
                  command=shlex.join(["python3", f"scripts/{Path(__file__).name}", *sys.argv[1:]]))
    out = write_result(result, "tenancy-gateways", ROOT / "benchmarks" / "results")  # adds the commit and date
    print(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
