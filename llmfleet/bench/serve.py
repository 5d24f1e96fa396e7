"""`llmfleet bench serve`: a streaming HTTP load generator against an OpenAI-compatible server.

Requests are token-id prompts to /v1/completions with `ignore_eos` and max_tokens = the output length, streamed
like a real client. Arrivals are Poisson at each rate (seeded; "inf" sends everything at once). W5 conversations
arrive that way and send their turns one after another. Per request: TTFT (send to first token chunk), ITL (gaps
between token chunks), TPOT ((latency - TTFT) / (output tokens - 1)). Goodput counts requests meeting both SLOs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace

import httpx
import numpy as np

from llmfleet.bench.workloads import BenchRequest, workload

TTFT_SLO_S = 0.5
TPOT_SLO_S = 0.05


@dataclass(slots=True)
class RequestResult:
    """What one streamed request measured (seconds)."""
    ok: bool
    prompt_tokens: int
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    turn: int = 0
    error: str | None = None
    cached_tokens: int = 0      # usage.prompt_tokens_details.cached_tokens: the server's prefix-cache hit

    @property
    def tpot(self) -> float:
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


async def send_request(http: httpx.AsyncClient, model: str, request: BenchRequest) -> RequestResult:
    """One streamed completion; never raises (a failure is a result with ok=False and the error)."""
    body = {"model": model, "prompt": request.prompt_token_ids, "max_tokens": request.max_tokens,
            "temperature": 0.0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    result = RequestResult(False, len(request.prompt_token_ids), turn=request.turn)
    start = last = time.perf_counter()
    try:
        async with http.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "error event")
                    return result
                if chunk.get("usage"):
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                    result.cached_tokens = (chunk["usage"].get("prompt_tokens_details") or {}).get(
                        "cached_tokens") or 0
                if chunk.get("choices"):
                    now = time.perf_counter()
                    if result.ttft == 0.0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.latency = time.perf_counter() - start
    result.ok = result.output_tokens > 0 or request.max_tokens == 0
    if not result.ok:
        result.error = "no usage in the stream"
    return result


async def run_rate(url: str, model: str, requests: list[BenchRequest], rate: float, seed: int,
                   api_key: str | None = None) -> tuple[list[RequestResult], float]:
    """Send `requests` at Poisson `rate` (per second; inf: all at once). Returns (results, wall seconds)."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(None), limits=limits, headers=headers) as http:
        groups = _arrival_groups(requests)
        start = time.perf_counter()
        tasks = []
        for group in groups:
            tasks.append(asyncio.create_task(_send_in_order(http, model, group)))
            if math.isfinite(rate):
                await asyncio.sleep(rng.expovariate(rate))
        results = [r for group_results in await asyncio.gather(*tasks) for r in group_results]
        return results, time.perf_counter() - start


def _arrival_groups(requests: list[BenchRequest]) -> list[list[BenchRequest]]:
    """What arrives together: one request, or a whole W5 conversation (its turns then run in order)."""
    groups: dict[object, list[BenchRequest]] = {}
    for i, request in enumerate(requests):
        key = ("conversation", request.conversation) if request.conversation is not None else i
        groups.setdefault(key, []).append(request)
    return list(groups.values())


async def _send_in_order(http: httpx.AsyncClient, model: str, group: list[BenchRequest]) -> list[RequestResult]:
    return [await send_request(http, model, request) for request in group]


def percentiles(values: list[float], scale: float = 1000.0) -> dict:
    """mean/p50/p90/p99 of `values` (seconds) in milliseconds; None when there are none."""
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    array = np.asarray(values, dtype=np.float64) * scale
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"mean": float(array.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(results: list[RequestResult], duration: float, rate: float) -> dict:
    """The figures BENCHMARKS.md asks for, for one rate."""
    ok = [r for r in results if r.ok]
    good = [r for r in ok if r.ttft <= TTFT_SLO_S and r.tpot <= TPOT_SLO_S]
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    summary = {
        "rate": rate if math.isfinite(rate) else "inf", "duration_s": duration, "completed": len(ok),
        "failed": len(results) - len(ok), "errors": sorted({r.error for r in results if r.error})[:5],
        "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
        "cached_prompt_tokens": sum(r.cached_tokens for r in ok),
        "prefix_hit_rate": sum(r.cached_tokens for r in ok) / prompt_tokens if prompt_tokens else 0.0,
        "request_throughput": len(ok) / duration, "output_throughput": output_tokens / duration,
        "total_token_throughput": (prompt_tokens + output_tokens) / duration,
        "goodput": len(good) / duration, "goodput_fraction": len(good) / len(results) if results else 0.0,
        "slo": {"ttft_s": TTFT_SLO_S, "tpot_s": TPOT_SLO_S},
        "ttft_ms": percentiles([r.ttft for r in ok]),
        "tpot_ms": percentiles([r.tpot for r in ok if r.output_tokens > 1]),
        "itl_ms": percentiles([gap for r in ok for gap in r.itl]),
        "e2e_latency_ms": percentiles([r.latency for r in ok]),
    }
    turns = sorted({r.turn for r in ok})
    if len(turns) > 1:
        summary["ttft_ms_by_turn"] = {t: percentiles([r.ttft for r in ok if r.turn == t]) for t in turns}
    return summary


# ----------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `llmfleet bench serve`."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--workload", default="W3", help="W3 (default), W4 or W5; any of W0..W6 works")
    parser.add_argument("--rate", default=[1.0], type=_rates,
                        help="request rates per second, comma-separated; 'inf' sends all at once (e.g. 2,4,8,inf)")
    parser.add_argument("--num-requests", type=int, default=None, help="only the workload's first N requests")
    parser.add_argument("--model", default=None, help="model name to ask for (default: the server's first)")
    parser.add_argument("--shape", default=None, help="model shape recorded in the result (default: --model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    parser.add_argument("--max-input-tokens", type=int, default=None,
                        help="truncate prompts (smoke runs only; recorded in the result)")
    parser.add_argument("--max-output-tokens", type=int, default=None,
                        help="cap output lengths (smoke runs only; recorded in the result)")
    parser.add_argument("--api-key", default=None, help="bearer token, if the server requires one")
    parser.add_argument("--results-dir", default="benchmarks/results")
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")


def _rates(text: str) -> list[float]:
    try:
        rates = [math.inf if part.strip().lower() == "inf" else float(part) for part in text.split(",")]
    except ValueError:
        rates = []
    if not rates or any(not rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"rates must be numbers > 0 or 'inf', got {text!r}")
    return rates


def run(args: argparse.Namespace) -> int:
    """Run every rate, print a line per rate, write one JSON record; 1 if any request failed."""
    from llmfleet.bench.results import write_result

    try:
        requests = _requests(args)
        model, max_model_len = _server_model(args)
    except ValueError as exc:
        print(f"llmfleet bench serve: error: {exc}", file=sys.stderr)
        return 2
    runs = []
    for rate in args.rate:
        results, duration = asyncio.run(run_rate(args.url, model, requests, rate, args.seed, args.api_key))
        runs.append(summarize(results, duration, rate))
        print(_describe(args.workload.upper(), runs[-1]))
    record = {"workload": args.workload.upper(), "shape": args.shape or model, "model": model, "url": args.url,
              "num_requests": len(requests), "seed": args.seed, "max_model_len": max_model_len,
              "max_input_tokens": args.max_input_tokens, "max_output_tokens": args.max_output_tokens, "runs": runs}
    if not args.no_save:
        print("wrote", write_result(record, "serve", args.results_dir))
    return 0 if all(run["failed"] == 0 for run in runs) else 1


def _requests(args: argparse.Namespace) -> list[BenchRequest]:
    requests = workload(args.workload, args.num_requests)
    if args.max_input_tokens or args.max_output_tokens:
        requests = [replace(r, prompt_token_ids=r.prompt_token_ids[:args.max_input_tokens or None],
                            max_tokens=min(r.max_tokens, args.max_output_tokens or r.max_tokens)) for r in requests]
    return requests


def _server_model(args: argparse.Namespace) -> tuple[str, int | None]:
    """(model to ask for, the server's max_model_len) from /v1/models."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    try:
        models = httpx.get(args.url.rstrip("/") + "/v1/models", headers=headers, timeout=30).json()["data"]
        card = next((m for m in models if m["id"] == args.model), models[0]) if models else None
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise ValueError(f"url: no model list from {args.url}: {exc}") from None
    if card is None:
        raise ValueError(f"url: {args.url} serves no model")
    return args.model or card["id"], card.get("max_model_len")


def _describe(name: str, run: dict) -> str:
    def ms(block: dict) -> str:
        return "/".join("-" if block[k] is None else f"{block[k]:.1f}" for k in ("p50", "p90", "p99"))

    lines = [f"{name} rate={run['rate']}: {run['completed']} ok, {run['failed']} failed, {run['duration_s']:.1f} s | "
             f"{run['request_throughput']:.2f} req/s, {run['output_throughput']:.1f} output tok/s, goodput "
             f"{run['goodput']:.2f} req/s | p50/p90/p99 ms: TTFT {ms(run['ttft_ms'])}, TPOT {ms(run['tpot_ms'])}, "
             f"ITL {ms(run['itl_ms'])}"]
    return "\n".join(lines + [f"  error: {error}" for error in run["errors"]])
