"""The PII guard's speed on this CPU: `pii.find` over 4 KB prompts of several kinds, written as JSON under
benchmarks/results/cpu-tenancy/. The target is 1 ms per 4 KB.
    python3 scripts/bench_pii.py [--texts 200] [--rounds 5]

Kinds: English prose; Python source (the standard library's); digit-dense logs (timestamps, ids, latencies,
versions); number tables; and prose carrying 16 PII values per 4 KB (every hit costs its checksum and bounds).
"""
from __future__ import annotations

import argparse
import inspect
import json
import platform
import shlex
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmfleet.bench.results import write_result  # noqa: E402
from llmfleet.tenancy.guards import pii  # noqa: E402

SIZE = 4096
WORDS = ("the a of and to in is that for it as with was on be by this are from at or an have not which but they "
         "you we model request answer server please explain why how what when summary write code list table "
         "review customer order shipping invoice meeting schedule report analysis data team project").split()
PII = ("jane.doe@example.com", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "123-45-6789",
       "192.168.10.24", "+1 415-555-0123", "sk-live_abcdefghijklmnopqrstuvwx", "2001:db8::8a2e:370:7334")


def _fill(rng: random.Random, piece) -> str:
    parts, size = [], 0
    while size < SIZE:
        parts.append(piece(rng))
        size += len(parts[-1]) + 1
    return " ".join(parts)[:SIZE]


def prose(rng):
    return _fill(rng, lambda r: r.choice(WORDS) + r.choice(("", "", "", ",", ".")))


def code(rng):
    import asyncio.base_events as source_module

    source = inspect.getsource(source_module)
    start = rng.randrange(len(source) - SIZE)
    return source[start:start + SIZE]


def logs(rng):
    def line(r):
        return (f"2026-12-{r.randrange(1, 29):02d}T{r.randrange(24):02d}:{r.randrange(60):02d}:"
                f"{r.randrange(60):02d}.{r.randrange(1000):03d}Z INFO req={r.getrandbits(32):08x} "
                f"id={r.randrange(10**9)} latency_ms={r.random() * 100:.2f} tokens={r.randrange(4096)} "
                f"status={r.choice((200, 200, 429, 503))} v{r.randrange(3)}.{r.randrange(20)}.{r.randrange(9)}\n")
    return _fill(rng, line)


def numbers(rng):
    return _fill(rng, lambda r: r.choice((f"{r.random() * 1e4:.2f}", str(r.randrange(10**6)),
                                          f"{r.randrange(10**4):,}.00", f"{r.random():.4f}")))


def pii_dense(rng):
    text = list(prose(rng))
    for i, value in enumerate(rng.choice(PII) for _ in range(16)):
        at = i * (SIZE // 16)
        text[at:at + len(value) + 2] = f" {value} "
    return "".join(text)[:SIZE]


def measure(make, texts: int, rounds: int, rng: random.Random) -> dict:
    corpus = [make(rng) for _ in range(texts)]
    for text in corpus:
        pii.find(text)
    samples = []
    for _ in range(rounds):
        for text in corpus:
            start = time.perf_counter()
            pii.find(text)
            samples.append(time.perf_counter() - start)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples) * 1e3, 4),
            "p90_ms": round(samples[int(len(samples) * 0.9)] * 1e3, 4),
            "p99_ms": round(samples[int(len(samples) * 0.99)] * 1e3, 4),
            "min_ms": round(samples[0] * 1e3, 4), "hits_per_text": round(
                sum(len(pii.find(t)) for t in corpus) / len(corpus), 1), "n": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    kinds = {"prose": prose, "python_source": code, "digit_dense_logs": logs, "number_tables": numbers,
             "pii_dense_16_per_4kb": pii_dense}
    result = {"bench": "pii-guard", "text_bytes": SIZE, "target_ms": 1.0,
              "kinds": {name: measure(make, args.texts, args.rounds, rng) for name, make in kinds.items()},
              "python": platform.python_version(), "machine": platform.machine(),
              "load_average": list(__import__("os").getloadavg()),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result.update(workload="4kb-texts", shape="regex", device="cpu-tenancy",
                  command=shlex.join(["python3", f"scripts/{Path(__file__).name}", *sys.argv[1:]]))
    out = write_result(result, "pii-guard", ROOT / "benchmarks" / "results")  # adds the commit and date
    print(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
