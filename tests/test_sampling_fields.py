"""The sampling fields beyond temperature and top-k, offline through the engine: logit_bias and min_tokens (the
logit edits before sampling), min_tokens holding stop strings too, include_stop_str_in_output, best_of, and
prompt_logprobs against Hugging Face's float32 log-probabilities across chunked prefill; bad values named."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmfleet import LLM, SamplingParams
from llmfleet.model.layers.logits_adjust import LogitAdjustments, adjust_logits
from tests.checkpoints import checkpoint

STOPS_EARLY = [5, 77, 123, 9, 300, 41, 8]   # greedy on the qwen2 tiny checkpoint: EOS as the second token
EOS = 2
LONG = [5, 77, 123, 9, 300, 41, 8, 200, 201, 202, 13, 14, 15, 16, 99, 98, 97, 3, 4, 6, 10]


@pytest.fixture(scope="module")
def llm() -> LLM:
    # A small token budget: LONG is prefilled in three chunks.
    return LLM(str(checkpoint("qwen2")), device="cpu", dtype="float32", max_num_seqs=8, max_num_batched_tokens=8)


def _free(llm) -> bool:
    stats = llm.engine.stats()
    return stats.num_free_blocks == stats.num_total_blocks


def test_logit_edits_are_built_per_row():
    params = [SamplingParams(logit_bias={3: 5.0, 1: -100}), SamplingParams(min_tokens=2, stop_token_ids=[4]),
              SamplingParams(min_tokens=2, ignore_eos=True)]
    adj = LogitAdjustments.build(params, [0, 1, 0], eos_token_ids={0})
    logits = adjust_logits(torch.zeros(3, 6), adj)
    assert logits[0].tolist() == [0, -100, 0, 5, 0, 0]
    assert logits[1].tolist() == [float("-inf"), 0, 0, 0, float("-inf"), 0]
    assert logits[2].tolist() == [0] * 6                 # ignore_eos: EOS is not held back
    assert LogitAdjustments.build(params[1:2], [2], {0}).ban_rows == []  # min_tokens reached


def test_min_tokens_hold_back_eos_and_stop_strings(llm):
    free = llm.generate(STOPS_EARLY, SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    assert free.token_ids[-1] == EOS and len(free.token_ids) == 2
    held = llm.generate(STOPS_EARLY, SamplingParams(temperature=0, max_tokens=12, min_tokens=7))[0].outputs[0]
    assert len(held.token_ids) >= 7 and EOS not in held.token_ids[:7]
    text = llm.generate(STOPS_EARLY, SamplingParams(temperature=0, max_tokens=12, min_tokens=12))[0].outputs[0].text
    stop = text[:2]
    early = llm.generate(STOPS_EARLY, SamplingParams(temperature=0, max_tokens=12, min_tokens=12, stop=[stop]))
    assert early[0].outputs[0].finish_reason == "length"  # the stop string came before min_tokens: it passes
    assert _free(llm)


def test_logit_bias_shifts_logprobs_and_sampling(llm):
    out = llm.generate(LONG, SamplingParams(temperature=1.0, max_tokens=4, logit_bias={42: 100, 7: 50},
                                            logprobs=1, ignore_eos=True))[0].outputs[0]
    assert out.token_ids == [42] * 4 and all(lp[42].logprob > -1e-3 for lp in out.logprobs)


def test_include_stop_str_in_output(llm):
    full = llm.generate(LONG, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0].outputs[0].text
    stop = full[6:9]
    kept = llm.generate(LONG, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop=[stop],
                                             include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == full[:full.index(stop) + len(stop)] and kept.stop_reason == stop


def test_best_of_returns_the_best_n_by_cumulative_logprob(llm):
    every = llm.generate(LONG, SamplingParams(n=5, temperature=1.0, seed=3, max_tokens=6, logprobs=0,
                                              ignore_eos=True))[0].outputs
    ranked = sorted(every, key=lambda c: -c.cumulative_logprob)
    best = llm.generate(LONG, SamplingParams(n=2, best_of=5, temperature=1.0, seed=3, max_tokens=6,
                                             ignore_eos=True))[0].outputs
    assert [c.token_ids for c in best] == [c.token_ids for c in ranked[:2]]
    assert [c.index for c in best] == [0, 1] and best[0].logprobs is None
    assert best[0].cumulative_logprob == pytest.approx(sum(lp[t].logprob for lp, t in
                                                           zip(ranked[0].logprobs, ranked[0].token_ids)))
    assert _free(llm)


def test_prompt_logprobs_equal_hugging_face_across_chunks(llm):
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint("qwen2")), dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([LONG])).logits[0].log_softmax(-1)
    outs = llm.generate([LONG, STOPS_EARLY], [SamplingParams(n=2, temperature=0, max_tokens=2, prompt_logprobs=3),
                                              SamplingParams(temperature=0, max_tokens=2)])
    entries = outs[0].prompt_logprobs
    assert entries[0] is None and len(entries) == len(LONG) and outs[1].prompt_logprobs is None
    for i in range(1, len(LONG)):
        own = entries[i][LONG[i]]
        assert own.logprob == pytest.approx(ref[i - 1, LONG[i]].item(), abs=1e-4)
        assert own.rank == int((ref[i - 1] > ref[i - 1, LONG[i]]).sum()) + 1
        top = ref[i - 1].topk(3)
        assert {t: e.rank for t, e in entries[i].items() if t in top.indices.tolist()} == \
            {t: r for r, t in enumerate(top.indices.tolist(), start=1)}
    # A second time: the prompt is in the prefix cache, and the logprobs are computed all the same.
    again = llm.generate(LONG, SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0))[0].prompt_logprobs
    assert [e[LONG[i]].logprob for i, e in enumerate(again) if i] == \
        pytest.approx([entries[i][LONG[i]].logprob for i in range(1, len(LONG))], abs=1e-5)
    assert _free(llm)


@pytest.mark.parametrize("kwargs, field", [
    (dict(logit_bias={5: 100.5}), "logit_bias"), (dict(logit_bias={-1: 1.0}), "logit_bias"),
    (dict(min_tokens=-1), "min_tokens"), (dict(min_tokens=9, max_tokens=3), "min_tokens"),
    (dict(best_of=1, n=2), "best_of"), (dict(prompt_logprobs=21), "prompt_logprobs"),
    (dict(prompt_logprobs=True), "prompt_logprobs"),
])
def test_bad_values_name_their_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        SamplingParams(**kwargs)


def test_a_bias_outside_the_vocabulary_is_refused(llm):
    with pytest.raises(ValueError, match="^logit_bias: token id 100000"):
        llm.generate(LONG, SamplingParams(logit_bias={100000: 1.0}))
    assert len(llm.generate(LONG, SamplingParams(max_tokens=2))[0].outputs[0].token_ids) >= 1
