"""Speculative decoding end to end on CPU: greedy output is token-for-token the output without speculation, for the
n-gram and the draft-model proposers, across prefix caching, tiny token budgets, forced preemption and n = 2; every
block comes back; fallbacks (constrained requests, large batches) run without drafts; the counters are exact."""
from __future__ import annotations

import functools
import json
import random

import pytest

from llmfleet import LLM, SamplingParams
from llmfleet.protocol.structured import StructuredSpec
from tests.checkpoints import checkpoint

NEW_TOKENS = 24
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def _draft_self() -> dict:
    """The target as its own draft: nearly every draft is accepted, so the long-acceptance paths run."""
    return {"method": "draft", "model": str(checkpoint("llama")), "num_speculative_tokens": 3}


def _draft_other() -> dict:
    """A different model with the same tokenizer: drafts are mostly rejected, so the residual paths run."""
    return {"method": "draft", "model": str(checkpoint("qwen2")), "num_speculative_tokens": 2}


def prompts() -> list[list[int]]:
    """Prompts that repeat themselves (where n-gram lookup finds drafts), one sharing a prefix with another."""
    rng = random.Random(7)
    out = []
    for n in (5, 30, 61):
        motif = [rng.randrange(3, 512) for _ in range(max(3, n // 4))]
        out.append((motif * 8)[:n])
    out.append(out[2][:40] + [9, 10, 11])
    return out


CONFIGS = {
    "default": dict(),
    "budget-5-no-prefix-cache": dict(max_num_batched_tokens=5, block_size=4, enable_prefix_caching=False),
    "preemption": dict(num_kv_blocks=12, block_size=8, max_num_seqs=4),
}


@functools.lru_cache(maxsize=None)
def baseline(config: str, n: int = 1) -> tuple:
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", **CONFIGS[config])
    return _generate(llm, n)


def _generate(llm: LLM, n: int = 1) -> tuple:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, n=n)
    outputs = llm.generate(prompts(), params, use_tqdm=False)
    return tuple(tuple(tuple(c.token_ids) for c in o.outputs) for o in outputs)


def _check_blocks(llm: LLM) -> None:
    kv = llm.engine.kv
    kv.pool.check_invariants()
    assert kv.num_free_blocks == kv.pool.num_blocks   # free + cached-and-unused == total: nothing leaked


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", ["ngram", "draft-self", "draft-other"])
def test_greedy_identity(method, config):
    spec = {"ngram": NGRAM, "draft-self": _draft_self(), "draft-other": _draft_other()}[method]
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec, **CONFIGS[config])
    assert _generate(llm) == baseline(config)
    stats = llm.engine.stats()
    assert stats.spec_num_drafts > 0
    if method != "draft-other":   # two unrelated random models agree on (almost) nothing
        assert stats.spec_num_accepted_tokens > 0
    if config == "preemption":
        assert stats.num_preemptions > 0
    _check_blocks(llm)


@pytest.mark.parametrize("method", ["ngram", "draft-self"])
def test_greedy_identity_with_two_samples(method):
    spec = NGRAM if method == "ngram" else _draft_self()
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    assert _generate(llm, n=2) == baseline("default", 2)
    _check_blocks(llm)


@pytest.mark.parametrize("spec", [NGRAM, {"method": "draft", "model": "demo-draft", "num_speculative_tokens": 4}],
                         ids=["ngram", "demo-draft"])
def test_demo_pair_greedy_identity(spec):
    """The shipped pair: a target and a draft trained on the same corpus, on Python source."""
    text = ["def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n"]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = LLM("demo", device="cpu", dtype="float32", num_kv_blocks=64).generate(text, params, use_tqdm=False)
    llm = LLM("demo", device="cpu", dtype="float32", num_kv_blocks=64, speculative_config=spec)
    fast = llm.generate(text, params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]
    stats = llm.engine.stats()
    assert stats.spec_num_accepted_tokens > 0
    _check_blocks(llm)


def test_logprobs_of_accepted_tokens():
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=2)
    plain = LLM(str(checkpoint("llama")), device="cpu", dtype="float32").generate(prompts()[3], params,
                                                                                  use_tqdm=False)[0].outputs[0]
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=_draft_self())
    fast = llm.generate(prompts()[3], params, use_tqdm=False)[0].outputs[0]
    assert llm.engine.stats().spec_num_accepted_tokens > 0
    assert fast.token_ids == plain.token_ids and len(fast.logprobs) == len(plain.logprobs) == NEW_TOKENS
    for mine, theirs in zip(fast.logprobs, plain.logprobs):
        assert list(mine) == list(theirs)
        for token in mine:
            assert mine[token].logprob == pytest.approx(theirs[token].logprob, abs=1e-4)
            assert mine[token].rank == theirs[token].rank
    assert fast.cumulative_logprob == pytest.approx(plain.cumulative_logprob, abs=1e-3)


def test_constrained_requests_run_without_drafts():
    """A grammar's mask is per position and per matcher state: such a request falls back to one token a step."""
    spec = StructuredSpec("json", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}},
                                              "required": ["a"]}))
    params = SamplingParams(temperature=0, max_tokens=24, structured=spec)
    plain = LLM(str(checkpoint("llama")), device="cpu", dtype="float32").generate(prompts()[2], params,
                                                                                  use_tqdm=False)
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=NGRAM)
    fast = llm.generate(prompts()[2], params, use_tqdm=False)
    assert fast[0].outputs[0].token_ids == plain[0].outputs[0].token_ids
    assert llm.engine.stats().spec_num_drafts == 0


class _RepeatLast:
    """Proposes the last token k times: drafts every step (mostly rejected)."""

    def propose(self, token_ids: list[int], k: int, key=None) -> list[int]:
        return token_ids[-1:] * k

    def forget(self, keep: set) -> None:
        pass


def test_large_batches_do_not_speculate_and_run_asynchronously():
    """Above disable_by_batch_size sequences, steps run without drafts and overlap (asynchronous scheduling);
    once few are left, the tail speculates."""
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in (6, 6, 24, 24)]
    plain = LLM(str(checkpoint("llama")), device="cpu", dtype="float32").generate(prompts(), params, use_tqdm=False)
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32",
              speculative_config=dict(NGRAM, disable_by_batch_size=2))
    llm.engine.core.spec.ngram = _RepeatLast()      # always proposes: whether it speculates is the policy's call
    launched = []
    runner = llm.engine.runner
    launch = runner.launch
    runner.launch = lambda out, prev=None: launched.append(prev is not None) or launch(out, prev)
    fast = llm.generate(prompts(), params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]
    assert any(launched)                            # some steps overlapped the previous one
    assert llm.engine.stats().spec_num_drafts > 0   # the tail, two sequences, speculated
    _check_blocks(llm)


def test_counters_are_exact():
    """Drafts and acceptance counted from what the scheduler sent and the outputs that came back."""
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=_draft_other())
    core = llm.engine.core
    sent = []
    schedule = core.scheduler.schedule

    def recording():
        out = schedule()
        sent.append({i: len(d) for i, d in out.scheduled_spec_decode_tokens.items()})
        return out

    core.scheduler.schedule = recording
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    llm.generate(prompts()[2], params, use_tqdm=False)
    stats = core.stats()
    passes = [k for step in sent for k in step.values()]
    assert stats.spec_num_drafts == len(passes) > 0
    assert stats.spec_num_draft_tokens == sum(passes)
    # every step that sampled gave one token, plus one per accepted draft
    assert stats.generation_tokens == NEW_TOKENS
    # one step prefilled the prompt and sampled; each later step verified and gave 1 + accepted tokens
    assert stats.spec_num_accepted_tokens == NEW_TOKENS - len(sent)
    assert sum(stats.spec_accepted_per_pos) == stats.spec_num_accepted_tokens
    per_pos = stats.spec_accepted_per_pos
    assert all(a >= b for a, b in zip(per_pos, per_pos[1:]))


@pytest.mark.parametrize("method", ["ngram", "draft-other"])
def test_sampled_speculation_is_seeded_and_returns_every_block(method):
    """Rejection sampling draws from each request's own generator: a seed gives the same output every run."""
    spec = NGRAM if method == "ngram" else _draft_other()
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    if method == "ngram":
        llm.engine.core.spec.ngram = _RepeatLast()  # sampled text rarely repeats a suffix: draft every step
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=16, ignore_eos=True, seed=3, n=2)
    first = [[c.token_ids for c in o.outputs] for o in llm.generate(prompts()[1:3], params, use_tqdm=False)]
    again = [[c.token_ids for c in o.outputs] for o in llm.generate(prompts()[1:3], params, use_tqdm=False)]
    assert first == again and all(len(t) == 16 for o in first for t in o)
    assert llm.engine.stats().spec_num_drafts > 0
    _check_blocks(llm)
