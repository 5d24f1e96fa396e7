"""Sampling through the engine: seeds reproducible per request whatever the batch, top_k=1 is greedy, stop strings
and stop tokens, n > 1, logprobs, penalties; bad input rejected with a clear ValueError without harming the engine;
asynchronous steps (aborts in flight, ends reported only once the last token is in)."""
from __future__ import annotations

import math

import pytest

from llmfleet import LLM, SamplingParams
from tests.checkpoints import checkpoint

PROMPT = [5, 77, 123, 9, 300, 41, 8]
OTHERS = [[11, 12, 13], [200] * 40, [7, 8, 9, 10, 11, 12]]


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(str(checkpoint("qwen2")), device="cpu", dtype="float32", max_num_seqs=8)


def tokens(output, i: int = 0) -> list[int]:
    return output.outputs[i].token_ids


def test_seeded_sampling_is_reproducible_whatever_the_batch(llm):
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=24, seed=42, ignore_eos=True)
    alone = tokens(llm.generate(PROMPT, seeded)[0])
    unseeded = SamplingParams(temperature=1.0, max_tokens=30, ignore_eos=True)
    batch = llm.generate([OTHERS[0], PROMPT, OTHERS[1], OTHERS[2]], [unseeded, seeded, unseeded, unseeded])
    assert tokens(batch[1]) == alone
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=24, seed=43, ignore_eos=True)
    assert tokens(llm.generate(PROMPT, other_seed)[0]) != alone


def test_top_k_1_equals_greedy(llm):
    greedy = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0]
    top1 = llm.generate(PROMPT, SamplingParams(temperature=0.8, top_k=1, max_tokens=20, ignore_eos=True))[0]
    assert tokens(top1) == tokens(greedy)


def test_stop_string_cuts_text_exactly_before_it(llm):
    full = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))[0].outputs[0].text
    stop = full[10:13]
    cut = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=[stop]))[0]
    out = cut.outputs[0]
    assert out.text == full[:full.index(stop)]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert llm.engine.stats().num_free_blocks == llm.engine.stats().num_total_blocks


def test_stop_token_ids_and_length(llm):
    free_run = tokens(llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0])
    stopped = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                                  stop_token_ids=[free_run[4]]))[0].outputs[0]
    assert stopped.token_ids == free_run[:free_run.index(free_run[4]) + 1]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == free_run[4]
    length = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0].outputs[0]
    assert len(length.token_ids) == 3 and length.finish_reason == "length"


def test_n2_with_seed_gives_two_distinct_reproducible_samples(llm):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=7, ignore_eos=True)
    first = llm.generate(PROMPT, params)[0]
    second = llm.generate(PROMPT, params)[0]
    assert [o.index for o in first.outputs] == [0, 1]
    assert tokens(first, 0) != tokens(first, 1)
    assert (tokens(first, 0), tokens(first, 1)) == (tokens(second, 0), tokens(second, 1))


def test_n_siblings_share_the_prompt_blocks(llm):
    prompt = list(range(3, 3 + 64))        # four full 16-token blocks
    before = llm.engine.stats().prefix_cache_hits
    llm.generate(prompt, SamplingParams(n=3, temperature=1.0, max_tokens=4, seed=1, ignore_eos=True))
    assert llm.engine.stats().prefix_cache_hits - before >= 2 * 48   # siblings reuse the first's full blocks


def test_logprobs_are_normalised_and_rank_the_sampled_token(llm):
    out = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=5, logprobs=3, ignore_eos=True))[0]
    completion = out.outputs[0]
    assert len(completion.logprobs) == 5
    for token, entry in zip(completion.token_ids, completion.logprobs):
        assert token in entry and entry[token].rank == 1     # greedy: the sampled token is the most likely
        assert len(entry) == 3
        assert all(lp.logprob <= 0 for lp in entry.values())
        assert sum(math.exp(lp.logprob) for lp in entry.values()) <= 1.0 + 1e-5


def test_penalties_change_the_output_and_stay_deterministic(llm):
    base = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = tokens(llm.generate(PROMPT, base)[0])
    penal = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, repetition_penalty=1.8,
                           frequency_penalty=1.5, presence_penalty=1.0)
    first, second = (tokens(llm.generate(PROMPT, penal)[0]) for _ in range(2))
    assert first == second and first != plain
    assert len(set(first)) >= len(set(plain))


@pytest.mark.parametrize("make, field", [
    (lambda llm: llm.generate("", SamplingParams()), "prompt"),
    (lambda llm: llm.generate([[]], SamplingParams()), "prompt"),
    (lambda llm: llm.generate([1] * 1024, SamplingParams()), "prompt"),
    (lambda llm: llm.generate([3, 999_999], SamplingParams()), "prompt"),
    (lambda llm: llm.generate([3, -1], SamplingParams()), "prompt"),
    (lambda llm: SamplingParams(max_tokens=0), "max_tokens"),
    (lambda llm: SamplingParams(max_tokens=-5), "max_tokens"),
    (lambda llm: SamplingParams(top_p=0.0), "top_p"),
    (lambda llm: SamplingParams(top_p=1.5), "top_p"),
    (lambda llm: SamplingParams(temperature=-1), "temperature"),
    (lambda llm: SamplingParams(n=0), "n"),
    (lambda llm: SamplingParams(logprobs=-1), "logprobs"),
    (lambda llm: SamplingParams(stop=[""]), "stop"),
])
def test_bad_input_raises_a_clear_error_and_the_engine_serves_on(llm, make, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        make(llm)
    stats = llm.engine.stats()
    assert stats.num_waiting == stats.num_running == 0
    assert stats.num_free_blocks == stats.num_total_blocks
    out = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 4


def test_a_bad_prompt_in_a_batch_queues_nothing(llm):
    with pytest.raises(ValueError, match="prompt: has 1024 tokens"):
        llm.generate([PROMPT, [1] * 1024], SamplingParams(max_tokens=4))
    assert not llm.engine.has_unfinished_requests()
    assert llm.engine.stats().num_waiting == 0


def test_extreme_parameters_are_rejected_or_safe(llm):
    with pytest.raises(ValueError, match="^top_k:"):
        SamplingParams(top_k=2**70)
    with pytest.raises(ValueError, match="^seed:"):
        SamplingParams(seed=2**64)
    tiny = llm.generate(PROMPT, SamplingParams(temperature=1e-300, max_tokens=6, ignore_eos=True))[0]
    greedy = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    assert tokens(tiny) == tokens(greedy)
    huge_seed = SamplingParams(n=2, seed=2**63 - 1, temperature=1.0, max_tokens=4, ignore_eos=True)
    assert len(llm.generate(PROMPT, huge_seed)[0].outputs) == 2


def test_unbounded_max_tokens_is_limited_by_the_kv_cache_not_rejected():
    small = LLM(str(checkpoint("qwen2")), device="cpu", dtype="float32", num_kv_blocks=4, block_size=16)
    out = small.generate(PROMPT, SamplingParams(temperature=0, max_tokens=None, ignore_eos=True))[0].outputs[0]
    assert out.finish_reason == "length" and len(PROMPT) + len(out.token_ids) == 64


def test_streamed_outputs_report_an_end_only_once_every_token_is_in(llm):
    """With asynchronous scheduling a sequence can end (length) while its last token is still on its way: no
    cumulative output may carry a finish_reason before that token is in it."""
    engine = llm.engine
    full = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=9, ignore_eos=True))[0].outputs[0]
    for stop in (None, [full.text[5:8]]):
        engine.add_request("stream", PROMPT, SamplingParams(temperature=0, max_tokens=9, ignore_eos=True, stop=stop))
        seen = []
        while engine.has_unfinished_requests():
            seen += [o.outputs[0] for o in engine.step()]
        assert all(o.finish_reason is None for o in seen[:-1])
        last = seen[-1]
        if stop is None:
            assert last.finish_reason == "length" and last.token_ids == full.token_ids and last.text == full.text
        else:
            assert last.finish_reason == "stop" and last.text == full.text[:full.text.index(stop[0])]
        assert all(last.text.startswith(o.text) for o in seen)


def test_abort_while_a_step_is_in_flight_returns_every_block(llm):
    engine = llm.engine
    params = SamplingParams(temperature=1.0, max_tokens=30, ignore_eos=True)   # unseeded: asynchronous steps
    for i, prompt in enumerate([PROMPT, OTHERS[1], OTHERS[2]]):
        engine.add_request(f"abort-{i}", prompt, params)
    for _ in range(4):
        engine.step()
    assert engine.core._inflight is not None              # a launched step whose tokens are not read back yet
    engine.abort_request("abort-1")
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            assert out.request_id != "abort-1"
            if out.finished:
                finals[out.request_id] = out
    engine.step()                                     # nothing left to run: drains any launched step
    assert sorted(finals) == ["abort-0", "abort-2"]
    assert all(len(o.outputs[0].token_ids) == 30 for o in finals.values())
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks and stats.num_running == stats.num_waiting == 0


def test_n_samples_without_a_seed_run_asynchronously_to_completion(llm):
    out = llm.generate(PROMPT, SamplingParams(n=3, temperature=1.0, max_tokens=12, ignore_eos=True))[0]
    assert [len(o.token_ids) for o in out.outputs] == [12, 12, 12]
    assert all(o.finish_reason == "length" and -1 not in o.token_ids for o in out.outputs)


def test_n_samples_share_the_prompt_blocks_with_prefix_caching_off():
    llm = LLM(str(checkpoint("qwen2")), device="cpu", dtype="float32", enable_prefix_caching=False, block_size=16)
    engine, prompt = llm.engine, list(range(3, 3 + 64))                     # four full blocks
    engine.add_request("n3", prompt, SamplingParams(n=3, temperature=1.0, max_tokens=4, ignore_eos=True))
    engine.step()                                                           # all three admitted in one step
    used = engine.stats().num_total_blocks - engine.stats().num_free_blocks
    assert used == 4 + 2                # the first sample's 4 blocks; each sibling reuses 3, owns 1 for the rest
    while engine.has_unfinished_requests():
        engine.step()
    engine.add_request("other", prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    engine.step()
    assert engine.stats().num_total_blocks - engine.stats().num_free_blocks == 4   # nothing shared across requests
    while engine.has_unfinished_requests():
        engine.step()
    assert engine.stats().num_free_blocks == engine.stats().num_total_blocks
