"""`llmfleet bench fleet`: one workload (W5 by default) through a gateway over N real `llmfleet serve` replicas,
once per routing policy, so the policies are compared on the same requests.

For every policy the replicas are started afresh (empty prefix caches), each publishing KV events, and a gateway
process in front of them with that policy and the model's tokenizer; `llmfleet bench serve`'s load generator then
sends the workload (W5: each conversation's turns in order, conversations arriving at `--rate`). Per policy:
throughput, TTFT percentiles, and the replicas' prefix-cache hit rate (cached prompt tokens reported in each answer's
usage over all prompt tokens), plus how many requests each replica took.

    llmfleet bench fleet --model PATH --replicas 4 --workload W5 --num-requests 64 --max-output-tokens 16

On a GPU the replicas share it (each takes `--gpu-memory-utilization` of its memory, sized from what is free when
it starts, so they start one after another) and may serve a benchmark shape with random weights:

    llmfleet bench fleet --model qwen3-0.6b --load-format dummy --device cuda --replicas 2 \
        --gpu-memory-utilization 0.4 --num-kv-blocks 0 --tokenizer demo
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llmfleet.bench.serve import _requests, run_rate, summarize

ROOT = Path(__file__).resolve().parents[2]
SERVED = "fleet-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder every replica serves")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--policies", default="prefix-aware,round-robin,least-loaded")
    parser.add_argument("--workload", default="W5")
    parser.add_argument("--num-requests", type=int, default=None, help="only the workload's first N requests")
    parser.add_argument("--max-input-tokens", type=int, default=None)
    parser.add_argument("--max-output-tokens", type=int, default=None)
    parser.add_argument("--rate", type=float, default=float("inf"), help="arrivals (W5: conversations) per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-kv-blocks", type=int, default=512, help="per replica; 0: sized from free memory")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (the replicas share one GPU)")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, the model's on CUDA")
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="each replica's share of the GPU (with --device cuda and --num-kv-blocks 0)")
    parser.add_argument("--tokenizer", default=None,
                        help="the gateway's tokenizer for prompt hashing (default: --model; workloads send token "
                             "ids, so any tokenizer folder or demo name serves a random-weight shape)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--shape", default=None, help="model shape recorded in the result (default: folder name)")
    parser.add_argument("--results-dir", default="benchmarks/results")


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.results import write_result

    requests = _requests(args)
    runs = {}
    for policy in args.policies.split(","):
        runs[policy] = _one_policy(args, policy, requests)
        r = runs[policy]
        if not r["completed"]:
            raise RuntimeError(f"{policy}: every request failed, e.g. {r['errors'][:1]}")
        print(f"{policy}: {r['completed']} ok, {r['failed']} failed, {r['request_throughput']:.2f} req/s, "
              f"{r['total_token_throughput']:.0f} tok/s, TTFT p50 {r['ttft_ms']['p50']:.0f} ms p90 "
              f"{r['ttft_ms']['p90']:.0f} ms, hit rate {r['prefix_hit_rate']:.3f}, routed {r['routed']}")
    record = {"workload": args.workload.upper(), "shape": args.shape or Path(args.model).name,
              "replicas": args.replicas, "num_requests": len(requests), "rate": args.rate,
              "max_input_tokens": args.max_input_tokens, "max_output_tokens": args.max_output_tokens,
              "num_kv_blocks_per_replica": args.num_kv_blocks, "max_num_seqs": args.max_num_seqs,
              "runs": runs, "ratios_vs_round_robin": _ratios(runs), "device": _device(args.device)}
    print("wrote", write_result(record, "fleet", args.results_dir))
    return 0 if all(r["failed"] == 0 for r in runs.values()) else 1


def _one_policy(args: argparse.Namespace, policy: str, requests) -> dict:
    procs: list[subprocess.Popen] = []
    try:
        replicas = []
        for _ in range(args.replicas):   # one at a time: a GPU replica sizes its KV cache from free memory
            replicas.append(_spawn(procs, _serve_argv(args)))
            _wait_ready(replicas[-1], procs)
        argv = ["gateway", "--policy", policy, "--tokenizer", args.tokenizer or args.model, "--log-level", "warning"]
        gateway = _spawn(procs, argv + [flag for url in replicas for flag in ("--replica", url)])
        _wait_ready(gateway, procs)
        time.sleep(1.0)   # KV-event subscriptions replayed
        results, duration = asyncio.run(run_rate(gateway, SERVED, requests, args.rate, args.seed))
        summary = summarize(results, duration, args.rate)
        fleet = httpx.get(gateway + "/fleet/replicas", timeout=10).json()["replicas"]
        summary["routed"] = [r["routed"] for r in fleet]
        return summary
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)


def _serve_argv(args: argparse.Namespace) -> list[str]:
    argv = ["serve", "--model", args.model, "--served-model-name", SERVED, "--device", args.device,
            "--dtype", args.dtype or ("float32" if args.device == "cpu" else "auto"), "--load-format",
            args.load_format, "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
            "--kv-events-endpoint", f"tcp://127.0.0.1:{_free_port(pair=True)}", "--log-level", "warning"]
    if args.num_kv_blocks:
        argv += ["--num-kv-blocks", str(args.num_kv_blocks)]
    if args.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    return argv


def _ratios(runs: dict) -> dict:
    base = runs.get("round-robin")
    if base is None:
        return {}
    return {policy: {"ttft_p90_rr_over_policy": _div(base["ttft_ms"]["p90"], r["ttft_ms"]["p90"]),
                     "throughput_policy_over_rr": _div(r["total_token_throughput"], base["total_token_throughput"])}
            for policy, r in runs.items()}


def _device(device: str) -> str:
    if device.startswith("cuda"):
        from llmfleet.bench.results import device_name
        return device_name()
    return f"cpu-{os.cpu_count()}-core"


def _div(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def _spawn(procs: list, argv: list[str]) -> str:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs.append(subprocess.Popen([sys.executable, "-m", "llmfleet", *argv, "--port", str(port)], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL))
    return f"http://127.0.0.1:{port}"


def _wait_ready(url: str, procs: list, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a process exited while waiting for {url}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {timeout} s")


def _free_port(pair: bool = False) -> int:
    """A free port (and, with `pair`, its successor free too: a KV-event endpoint uses both)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as other, contextlib.suppress(OSError):
            other.bind(("127.0.0.1", port + 1))
            return port
