"""The training sequences of scripts/train_eagle.py: prompts from this repository's material, continued greedily
by the target through llmfleet's engine (EOS ignored, as the benchmarks ignore it).

Prompts: random-id prompts shaped like the W0..W2 workloads (ids in [0, 10000), lengths 64 / 128 / 256, other
seeds than the benchmarks'), the W7 editing prompts (the package's own source), docs/ paragraphs and files of
Python's standard library (llmfleet/data/stdlib_corpus.py).
"""
from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_prompts(num_random: int, num_text: int, seed: int = 1) -> list:
    """Token-id prompts (lists) and text prompts (strings), interleaved deterministically."""
    rng = random.Random(seed)
    prompts: list = [[rng.randrange(10_000) for _ in range(rng.choice((64, 128, 256)))] for _ in range(num_random)]
    texts = _texts(num_text, rng)
    return prompts + texts


def _texts(count: int, rng: random.Random) -> list[str]:
    from llmfleet.bench.editing import editing_prompts
    texts = editing_prompts()[: count // 3]
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts += [p for p in path.read_text(encoding="utf-8").split("\n\n") if len(p) > 200]
    if len(texts) < count:
        from llmfleet.data.stdlib_corpus import load_split
        texts += [f.text[:1500] for f in load_split("train")[: count]]
    rng.shuffle(texts)
    return texts[:count]


def generate(model: str, prompts: list, max_new: int, device: str) -> list[list[int]]:
    """prompt + the target's greedy continuation, as token ids, per prompt."""
    from llmfleet import LLM, SamplingParams
    llm = LLM(model, device=device, dtype="bfloat16" if device.startswith("cuda") else "float32",
              gpu_memory_utilization=0.3, max_model_len=2048)
    tok = llm.get_tokenizer()
    vocab = llm.engine.runner.info.vocab_size
    ids = [[t % vocab for t in p] if isinstance(p, list) else tok.encode(p)[:512] for p in prompts]
    # EOS ignored, as the benchmarks ignore it: the head also learns what the target says after an answer ends
    outs = llm.generate(ids, SamplingParams(temperature=0, max_tokens=max_new, ignore_eos=True), use_tqdm=False)
    seqs = [p + list(o.outputs[0].token_ids) for p, o in zip(ids, outs)]
    del llm, outs
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return seqs


def sequences(args) -> list[list[int]]:
    """The training sequences: read from --cache if it exists, else generated (and written there)."""
    if args.cache is not None and args.cache.is_file():
        return json.loads(args.cache.read_text())
    seqs = generate(args.model, build_prompts(args.num_random, args.num_text), args.max_new, args.device)
    if args.cache is not None:
        args.cache.write_text(json.dumps(seqs))
    return seqs


def hf_folder(model: str) -> str:
    """A Hugging Face folder for `model`: itself, or a GGUF file's conversion (cached, as `llmfleet serve` does)."""
    if Path(model).is_file() and model.endswith(".gguf"):
        from llmfleet.entrypoints.default_model import default_cache_dir
        from llmfleet.model.gguf_export import cached_hf_folder
        return str(cached_hf_folder(Path(model), default_cache_dir() / "gguf"))
    return model
