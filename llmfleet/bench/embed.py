"""`llmfleet bench embed`: sentences per second of an embedding model through the engine (LLM.embed's path).

The sentences are made of common English words by a seeded generator (8 to 20 words each, about 12-25 tokens with
[CLS] and [SEP]: the length of the sentence-similarity sets such models are scored on), the same on every machine.
A first batch warms the model up untimed; then every sentence is submitted at once and the engine batches them
under its limits (`--batch-size` sequences per step, or fewer when the token budget is reached first).
"""
from __future__ import annotations

import argparse
import os
import random
import time

_WORDS = ("the of and to in is was for that with as on by at from his her this which or are an be had not but "
          "were have one all their there been has when who they more will would can if no out so said what about "
          "time people year way day man thing woman life child world school state family student group country "
          "problem hand part place case week company system program question work government number night point "
          "home water room mother area money story fact month lot right study book eye job word business issue "
          "side kind head house service friend father power hour game line end member law car city community name "
          "president team minute idea kid body information back parent face others level office door health "
          "person art war history party result change morning reason research girl guy moment air teacher force "
          "education quick brown fox jumps over lazy dog small model learned count answer weather sun shining").split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` deterministic sentences of 8-20 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
            for _ in range(count)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="an embedding model folder (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--num-sentences", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64, help="sequences per engine step (max_num_seqs)")
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--pooling", default=None, help="mean | last | cls (default: the model folder's)")
    p.add_argument("--load-format", default="auto", choices=["auto", "dummy"],
                   help="dummy: random weights (a folder without them; the speed is the same)")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.results import write_result

    record = run_benchmark(args)
    print(f"{record['sentences']} sentences ({record['mean_tokens']:.1f} tokens each) in {record['seconds']:.2f} s: "
          f"{record['sentences_per_s']:.0f} sentences/s, {record['tokens_per_s']:.0f} tokens/s "
          f"(batch {record['batch_size']}, {record['device']})")
    if not args.no_save:
        print("wrote", write_result(record, "embed", args.results_dir))
    return 0


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch

    from llmfleet.bench.results import device_name
    from llmfleet.engine.llm_engine import LLMEngine
    from llmfleet.protocol.config import EngineConfig

    engine = LLMEngine(EngineConfig(model=args.model, device=args.device, dtype=args.dtype,
                                    max_num_seqs=args.batch_size, max_num_batched_tokens=args.max_num_batched_tokens,
                                    pooling=args.pooling, load_format=args.load_format))
    ids = [engine.tokenizer.encode(t) for t in sentences(args.num_sentences)]  # the engine is what is measured
    _embed_all(engine, ids[:args.batch_size])    # warm-up, untimed
    began = time.perf_counter()
    outputs = _embed_all(engine, ids)
    seconds = time.perf_counter() - began
    num_tokens = sum(map(len, ids))
    return {
        "workload": f"{args.num_sentences}-sentences", "shape": f"batch-{args.batch_size}",
        "model": str(args.model), "load_format": args.load_format,
        "device": device_name() if engine.runner.device.startswith("cuda") else f"cpu-{os.cpu_count()}-core",
        "dtype": str(engine.runner.dtype), "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "max_num_batched_tokens": args.max_num_batched_tokens, "sentences": len(outputs),
        "mean_tokens": num_tokens / len(ids), "seconds": seconds, "sentences_per_s": len(outputs) / seconds,
        "tokens_per_s": num_tokens / seconds, "dimensions": len(outputs[0].outputs.data),
        "load_average_1m": os.getloadavg()[0],   # other work on the machine while it ran (CPU runs share cores)
    }


def _embed_all(engine, prompts: list[list[int]]) -> list:
    """Every prompt's PoolingRequestOutput (the last one read back to the host ends the timing)."""
    for i, prompt in enumerate(prompts):
        engine.add_pooling_request(f"bench-{i}", prompt)
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    return outputs
