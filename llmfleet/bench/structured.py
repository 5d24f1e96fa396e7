"""Structured-output benchmarks: grammar compile time (`llmfleet bench grammar`) and the pieces that the offline
bench's `--structured json` needs (a byte-level tokenizer for benchmark shapes, the decoding schema).

A benchmark shape's own tokenizer is word-level (`t123`), whose tokens cannot spell JSON; a grammar over it would
allow nothing. `byte_level_tokenizer` writes a byte-level BPE of the shape's vocabulary size instead: the 256 byte
tokens, then tokens grown by merging random pairs of shorter ones (up to 16 bytes, like real vocabularies), so the
grammar engine sees a realistic mix of token lengths.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

# What the JSON-schema decoding bench asks for: a fixed header, then an unbounded list, so a random model keeps
# writing until max_tokens (or closes the list and ends early: the bench counts the tokens that came out).
DECODE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "kind": {"enum": ["a", "b", "c"]}, "ok": {"type": "boolean"},
        "values": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["id", "kind", "ok", "values"],
}


def wide_schema(num_fields: int = 50) -> dict:
    """An object of `num_fields` required fields cycling through integer, string, enum, boolean, number and array."""
    kinds = [{"type": "integer"}, {"type": "string", "maxLength": 32}, {"enum": ["red", "green", "blue"]},
             {"type": "boolean"}, {"type": "number"}, {"type": "array", "items": {"type": "integer"}, "maxItems": 8}]
    props = {f"field_{i}": kinds[i % len(kinds)] for i in range(num_fields)}
    return {"type": "object", "properties": props, "required": list(props)}


def byte_level_tokenizer(vocab_size: int, folder: str, seed: int = 0) -> str:
    """Writes a byte-level BPE tokenizer of exactly `vocab_size` tokens (the last one is EOS) into `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    tokens = sorted(ByteLevel.alphabet())
    vocab, merges, seen = {t: i for i, t in enumerate(tokens)}, [], set(tokens)
    while len(tokens) < vocab_size - 1:
        a, b = rng.choice(tokens), rng.choice(tokens[:4096])
        if a + b not in seen and len(a + b) <= 16:
            seen.add(a + b)
            vocab[a + b] = len(tokens)
            tokens.append(a + b)
            merges.append((a, b))
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=backend)
    fast.add_special_tokens({"eos_token": "<|eos|>"})
    os.makedirs(folder, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab-size", type=int, default=151936, help="default: qwen3-0.6b's")
    p.add_argument("--num-fields", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5, help="fresh compilers timed (first compile each)")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from transformers import AutoTokenizer

    from llmfleet.bench.results import write_result

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = AutoTokenizer.from_pretrained(byte_level_tokenizer(args.vocab_size, folder))
    record = compile_times(tokenizer, args.vocab_size, wide_schema(args.num_fields), args.repeats)
    record.update(num_fields=args.num_fields, shape=f"vocab-{args.vocab_size}", load_average_1m=os.getloadavg()[0])
    if not _cuda():
        record["device"] = f"cpu-{os.cpu_count()}-core"
    print(json.dumps(record, indent=2))
    if not args.no_save:
        print("wrote", write_result(record, "grammar-compile", args.results_dir))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compile_times(tokenizer, vocab_size: int, schema: dict, repeats: int) -> dict:
    """Milliseconds to build the tokenizer info, to compile `schema` the first time (fresh compilers; wall and
    process CPU time, which a shared machine's load does not inflate) and again from the engine's cache, and to fill
    one bitmask."""
    import xgrammar as xgr

    from llmfleet.engine.structured.manager import GrammarManager
    from llmfleet.protocol.structured import StructuredSpec

    spec = StructuredSpec("json", json.dumps(schema))
    began = time.perf_counter()
    managers = [GrammarManager(tokenizer, vocab_size, [tokenizer.eos_token_id]) for _ in range(repeats)]
    for manager in managers:
        manager._compiler.result()  # built in the background: the compilations below must not wait for it
    info_ms = (time.perf_counter() - began) * 1e3 / repeats
    first, first_cpu, cached = [], [], []
    for manager in managers:
        began, began_cpu = time.perf_counter(), time.process_time()
        compiled = manager._future(spec).result()
        first.append((time.perf_counter() - began) * 1e3)
        first_cpu.append((time.process_time() - began_cpu) * 1e3)
        began = time.perf_counter()
        manager._future(spec).result()
        cached.append((time.perf_counter() - began) * 1e3)
        manager.shutdown()
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab_size)
    began = time.perf_counter()
    matcher.fill_next_token_bitmask(bitmask, 0)
    fill_ms = (time.perf_counter() - began) * 1e3
    return dict(vocab_size=vocab_size, tokenizer_info_ms=info_ms, compile_ms_first_median=statistics.median(first),
                compile_ms_first_all=first, compile_cpu_ms_first_median=statistics.median(first_cpu),
                compile_threads=managers[0].compile_threads, compile_ms_cached_median=statistics.median(cached),
                first_bitmask_fill_ms=fill_ms, schema_chars=len(spec.spec))
