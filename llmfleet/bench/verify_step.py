"""`llmfleet bench verify-step`: time of one speculative verify step (1 + k tokens per sequence) against a plain
decode step, at several batch sizes, and the speedup those times predict at given acceptance rates.

Each batch of sequences (prompts of `--context` random ids) is prefilled, then decoded with exactly k draft tokens
per sequence and step (fixed ids, so every sequence verifies k every step; with random weights nearly all are
rejected and each step advances one token, keeping the context steady). k = 0 is the engine without speculation
(asynchronous decode steps). With acceptance rate a per draft token, a verify step of k drafts yields
(1 - a^(k+1)) / (1 - a) tokens per sequence on average, so the predicted speedup is that times t(0) / t(k).
"""
from __future__ import annotations

import argparse
import random
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="llama3-8b", help="a benchmark shape (random weights) or a model folder")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--k", type=int, nargs="+", default=list(range(0, 9)), help="draft tokens per step (0: none)")
    p.add_argument("--context", type=int, default=512, help="prompt length of every sequence")
    p.add_argument("--steps", type=int, default=20, help="timed steps per (batch, k)")
    p.add_argument("--acceptance-rate", type=float, nargs="+", default=[0.6, 0.8, 0.9],
                   help="per-token acceptance rates to predict speedups at (e.g. W7's measured one)")
    p.add_argument("--device", default="auto")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--device-name", default=None, help="the record's device folder (default: the device's name)")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


class _FixedDrafts:
    """Proposes the same k ids for every sequence (stands in for n-gram lookup)."""

    def propose(self, token_ids: list[int], k: int, key=None) -> list[int]:
        return [11 + j for j in range(k)]

    def forget(self, keep: set) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.offline import _device_name
    from llmfleet.bench.results import write_result
    from llmfleet.engine.llm_engine import LLMEngine
    from llmfleet.model.shapes import SHAPES
    from llmfleet.protocol.config import EngineConfig

    k_max = max(max(args.k), 1)
    engine = LLMEngine(EngineConfig(
        model=args.shape, device=args.device, load_format="dummy" if args.shape in SHAPES else "auto",
        max_num_seqs=max(args.batch), max_model_len=args.context + 4096, enforce_eager=args.enforce_eager,
        speculative_config={"method": "ngram", "num_speculative_tokens": k_max, "disable_by_batch_size": None,
                            "adaptive": False}))
    spec = engine.core.spec
    spec.ngram = _FixedDrafts()
    rows = [dict(batch=b, **_time_batch(engine, spec, b, args)) for b in args.batch]
    record = dict(shape=args.shape, workload=f"verify-step-context-{args.context}", context=args.context,
                  steps=args.steps, rows=rows, acceptance_rates=args.acceptance_rate,
                  device=args.device_name or _device_name(engine.runner.device))
    for row in rows:
        print(f"batch {row['batch']}: " + ", ".join(f"k={k} {ms:.2f} ms" for k, ms in row["step_ms"].items()))
        for rate, best in row["best_k"].items():
            print(f"  acceptance {rate}: best k={best['k']}, predicted speedup {best['speedup']:.2f}x")
    if not args.no_save:
        print("wrote", write_result(record, "verify-step", args.results_dir))
    return 0


def _time_batch(engine, spec, batch: int, args) -> dict:
    from llmfleet.protocol.sampling_params import SamplingParams

    rng = random.Random(0)
    vocab = min(engine.vocab_size, 10_000)
    ids = [f"verify-{batch}-{i}" for i in range(batch)]
    params = SamplingParams(temperature=0, max_tokens=4000, ignore_eos=True, detokenize=False)
    for request_id in ids:
        engine.add_request(request_id, [rng.randrange(3, vocab) for _ in range(args.context)], params)
    core = engine.core
    while any(s.num_computed_tokens < s.num_tokens - 1 for s in core.scheduler.running) or core.scheduler.waiting:
        engine.step()
    step_ms = {}
    for k in args.k:
        core.spec = spec if k > 0 else None
        spec.k = k
        for _ in range(3):   # warm: shapes of this k compiled, the async pipeline filled
            engine.step()
        began = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        step_ms[k] = (time.perf_counter() - began) * 1e3 / args.steps
    core.spec = spec
    engine.abort_request(ids)
    return dict(step_ms=step_ms, best_k=_predict(step_ms, args.acceptance_rate))


def _predict(step_ms: dict[int, float], rates: list[float]) -> dict:
    """Per acceptance rate: the k with the highest predicted speedup over k = 0, and each k's."""
    base = step_ms.get(0)
    out = {}
    for rate in rates:
        speedups = {k: (1 - rate ** (k + 1)) / (1 - rate) * base / ms for k, ms in step_ms.items() if base} \
            if rate < 1 else {}
        best = max(speedups, key=speedups.get) if speedups else None
        out[str(rate)] = dict(k=best, speedup=speedups.get(best), per_k=speedups)
    return out
