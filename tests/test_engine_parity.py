"""Greedy outputs token-exact against HF transformers `generate` (CPU, float32), for every architecture and across
engine configurations: prefix caching on/off, tiny chunked-prefill budgets, max_num_seqs 1 and many, block sizes
1/4/16, and a KV pool so small that preemption must happen."""
from __future__ import annotations

import functools
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmfleet import LLM, SamplingParams
from tests.checkpoints import ARCHS, checkpoint

NEW_TOKENS = 64
LENGTHS = [1, 3, 17, 40, 64, 129, 200, 300]


def prompts_for(vocab: int = 512) -> list[list[int]]:
    rng = random.Random(1234)
    prompts = [[rng.randrange(3, vocab) for _ in range(n)] for n in LENGTHS]
    prompts[4] = prompts[6][:64]          # shares a prefix with another prompt: exercises prefix hits
    return prompts


@functools.lru_cache(maxsize=None)
def hf_greedy(arch: str) -> tuple[tuple[int, ...], ...]:
    model = AutoModelForCausalLM.from_pretrained(checkpoint(arch), dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for prompt in prompts_for():
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=10**9, pad_token_id=0)  # an id that never appears: run all 64
            outs.append(tuple(gen[0, len(prompt):].tolist()))
    return tuple(outs)


def engine_greedy(arch: str, **options) -> tuple[LLM, list[tuple[int, ...]]]:
    llm = LLM(str(checkpoint(arch)), device="cpu", dtype="float32", **options)
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(prompts_for(), params)
    return llm, [tuple(o.outputs[0].token_ids) for o in outputs]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_hf_generate(arch):
    _, got = engine_greedy(arch)
    assert got == list(hf_greedy(arch))


CONFIGS = {
    "no-prefix-cache": dict(enable_prefix_caching=False),
    "one-step-at-a-time": dict(async_scheduling=False, max_num_batched_tokens=50),
    "budget-7": dict(max_num_batched_tokens=7),
    "one-seq": dict(max_num_seqs=1),
    "block-1": dict(block_size=1, max_num_batched_tokens=300),
    "block-4-budget-33": dict(block_size=4, max_num_batched_tokens=33, max_num_seqs=3),
    "block-16": dict(block_size=16),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_same_tokens_across_engine_configurations(name):
    _, got = engine_greedy("llama", **CONFIGS[name])
    assert got == list(hf_greedy("llama"))


def test_preemption_under_a_tiny_pool_keeps_tokens_exact():
    # 24 blocks of 16 tokens = 384 slots: the 300-token prompt plus its 64 outputs needs 23 blocks on its own.
    llm, got = engine_greedy("qwen3", num_kv_blocks=24, block_size=16)
    assert got == list(hf_greedy("qwen3"))
    stats = llm.engine.stats()
    assert stats.num_preemptions > 0
    assert stats.num_free_blocks == stats.num_total_blocks


def test_prefix_cache_hits_on_repeat_and_free_blocks_return():
    llm, first = engine_greedy("llama")
    before = llm.engine.stats()
    again = llm.generate(prompts_for(), SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True))
    after = llm.engine.stats()
    assert [tuple(o.outputs[0].token_ids) for o in again] == first
    assert after.prefix_cache_hits - before.prefix_cache_hits > 600
    assert sum(o.num_cached_tokens for o in again) > 600
    assert after.num_free_blocks == after.num_total_blocks
