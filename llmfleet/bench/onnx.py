"""`llmfleet bench onnx --export-dir DIR`: first-token and per-token latency of an exported model at batch 1.

Four runtimes on the same prompts, greedy, N new tokens: onnxruntime on CPU (model.onnx and model.int8.onnx),
onnxruntime-web's wasm backend in headless Chromium (both files), and llmfleet's engine on CPU (float32). Each is
timed `--repeats` times per prompt after one warm-up; the record keeps medians. llmfleet's first token is the time
of a 1-token request; its per-token time is (time of N tokens - time of 1 token) / (N - 1).

Also reported: int8 against float32 in onnxruntime, as the top-1 agreement of int8's logits with float32's greedy
continuation (teacher-forced) and the length of the greedy prefix they share.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

PROMPTS = ["The capital of France is", "Write a short poem about the sea.",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"]
CHROMIUM = "/usr/bin/chromium"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export-dir", required=True, help="a folder written by `llmfleet export onnx`")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true", help="skip the headless Chromium runs")
    parser.add_argument("--note", default="", help="a remark stored in the record")
    parser.add_argument("--results-dir", default=None,
                        help="write the JSON record under this folder (e.g. benchmarks/results)")


def run(args: argparse.Namespace) -> int:
    """Measure, print the record, and write it with `write_result` when --results-dir is given."""
    from llmfleet.bench.results import write_result
    from llmfleet.export.runtime import OnnxDecoderSession

    folder = Path(args.export_dir)
    meta = json.loads((folder / "export.json").read_text())
    prompts = _tokenize(meta["source"])
    runs = {}
    for file in meta["files"]:
        session = OnnxDecoderSession(folder, file)
        runs[f"onnxruntime-cpu/{file}"] = _summarise([_timed(session, p, args) for p in prompts])
    if not args.no_browser:
        runs.update(_browser_runs(folder, meta["files"], prompts, args))
    runs["llmfleet-cpu/float32"] = _llmfleet_run(meta["source"], prompts, args)
    record = {"workload": "onnx-edge", "shape": f"b1-new{args.new_tokens}", "model": meta["source"],
              "new_tokens": args.new_tokens, "repeats": args.repeats, "prompt_tokens": [len(p) for p in prompts],
              "device": f"cpu-{os.cpu_count()}-core", "runs": runs, "note": args.note}
    if "model.int8.onnx" in meta["files"]:
        record["int8_vs_float32"] = _int8_agreement(folder, prompts, args.new_tokens)
    print(json.dumps(record, indent=2))
    if args.results_dir:
        print("wrote", write_result(record, "onnx", args.results_dir))
    return 0


def _tokenize(source: str) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return [tokenizer.encode(text) for text in PROMPTS]


def _timed(session, prompt: list[int], args) -> list:
    session.greedy(prompt, args.new_tokens)  # warm-up
    return [session.greedy(prompt, args.new_tokens) for _ in range(args.repeats)]


def _summarise(per_prompt: list[list]) -> dict:
    """Medians over every run of every prompt (results have first_token_ms and per_token_ms)."""
    first = [_get(r, "first_token_ms") for runs in per_prompt for r in runs]
    per_token = [statistics.median(_get(r, "per_token_ms")) for runs in per_prompt for r in runs]
    return {"first_token_ms": round(statistics.median(first), 2),
            "per_token_ms": round(statistics.median(per_token), 2), "samples": len(first)}


def _get(result, key):
    return result[key] if isinstance(result, dict) else getattr(result, key)


def _browser_runs(folder: Path, files: list[str], prompts, args) -> dict:
    from playwright.sync_api import sync_playwright

    from llmfleet.export.web import start_page_server

    server = start_page_server(folder)
    runs = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            tab = browser.new_page()
            tab.goto(f"http://127.0.0.1:{server.server_address[1]}/?backend=wasm")
            call = "([ids, n, file]) => window.llmfleetGreedy(ids, n, {file})"
            for file in files:
                per_prompt = []
                for prompt in prompts:
                    tab.evaluate(call, [prompt, args.new_tokens, file])  # warm-up
                    per_prompt.append([tab.evaluate(call, [prompt, args.new_tokens, file])
                                       for _ in range(args.repeats)])
                runs[f"chromium-wasm/{file}"] = {**_summarise(per_prompt), "backend": per_prompt[0][0]["backend"]}
            browser.close()
    finally:
        server.shutdown()
    return runs


def _llmfleet_run(source: str, prompts, args) -> dict:
    import itertools

    from llmfleet.engine.llm_engine import LLMEngine
    from llmfleet.protocol.config import EngineConfig
    from llmfleet.protocol.sampling_params import SamplingParams

    engine = LLMEngine(EngineConfig(model=source, device="cpu", dtype="float32", num_kv_blocks=256,
                                    enable_prefix_caching=False))
    ids = itertools.count()

    def seconds(prompt, n):  # one request alone in the engine, run to completion
        params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        start = time.perf_counter()
        engine.add_request(f"onnx-bench-{next(ids)}", prompt, params)
        while engine.has_unfinished_requests():
            engine.step()
        return time.perf_counter() - start

    first, per_token = [], []
    for prompt in prompts:
        seconds(prompt, args.new_tokens)  # warm-up
        for _ in range(args.repeats):
            one, full = seconds(prompt, 1), seconds(prompt, args.new_tokens)
            first.append(one * 1e3)
            per_token.append((full - one) * 1e3 / (args.new_tokens - 1))
    return {"first_token_ms": round(statistics.median(first), 2),
            "per_token_ms": round(statistics.median(per_token), 2), "samples": len(first)}


def _int8_agreement(folder: Path, prompts, new_tokens: int) -> dict:
    import numpy as np

    from llmfleet.export.runtime import OnnxDecoderSession

    fp32, int8 = OnnxDecoderSession(folder), OnnxDecoderSession(folder, "model.int8.onnx")
    agree, total, shared = 0, 0, []
    for prompt in prompts:
        reference = fp32.greedy(prompt, new_tokens).tokens
        logits, _ = int8.step(np.array([prompt + reference[:-1]]), int8.empty_past())
        top1 = logits[0, len(prompt) - 1:].argmax(-1).tolist()          # int8's pick at each generated position
        agree += sum(a == b for a, b in zip(top1, reference))
        total += len(reference)
        own = int8.greedy(prompt, new_tokens).tokens
        shared.append(next((i for i, (a, b) in enumerate(zip(own, reference)) if a != b), len(reference)))
    return {"teacher_forced_top1_agreement": round(agree / total, 4), "shared_greedy_prefix": shared}
