"""Verification of draft tokens (llmfleet.worker.spec_decode.rejection) on a tiny vocabulary.

Greedy acceptance is checked exactly. Rejection sampling must leave every emitted token distributed as the target
says, whatever the proposal: a chi-square test over 40,000 verify passes in one batch (seeded, so the outcome is the
same on every run), for point-mass proposals (n-gram) and for a draft distribution q far from the target's.
"""
from __future__ import annotations

import torch

from llmfleet.model.layers.sampler import SamplingBatch
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.worker.spec_decode.rejection import verify

VOCAB = 5
CHI2_CRITICAL_DF4 = 23.51   # chi-square, 4 degrees of freedom, upper tail 1e-4
TRIALS = 40_000
TARGET = torch.tensor([[0.05, 0.40, 0.25, 0.20, 0.10],    # p_0: after the last known token
                       [0.30, 0.05, 0.15, 0.10, 0.40],    # p_1: after draft 1
                       [0.20, 0.20, 0.20, 0.20, 0.20]])   # p_2: after draft 2 (the bonus position)
DRAFT_Q = torch.tensor([[0.60, 0.10, 0.10, 0.10, 0.10],
                        [0.10, 0.60, 0.10, 0.10, 0.10]])


def _chi2(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens, minlength=VOCAB).double()
    expected = probs.double() * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def _run(params: SamplingParams, drafts: list[list[int]], q=None):
    k = len(drafts[0])
    logits = TARGET[:k + 1].log().repeat(len(drafts), 1)              # [S * (k + 1), V]
    rows = len(drafts) * (k + 1)
    batch = SamplingBatch(params=[params] * rows, generators=[None] * rows)
    return verify(logits, batch, [k] * len(drafts), drafts, q)


def _check_distribution(result, drafts_accepted_first: torch.Tensor) -> None:
    tokens, counts = result.tokens, result.counts
    assert _chi2(tokens[:, 0], TARGET[0]) < CHI2_CRITICAL_DF4
    second = tokens[counts >= 2, 1]
    assert len(second) > 2000
    assert _chi2(second, TARGET[1]) < CHI2_CRITICAL_DF4
    # the first token is the draft exactly when the draft was accepted
    assert torch.equal(counts >= 2, drafts_accepted_first | (counts >= 2))


def test_point_mass_proposals_keep_the_target_distribution():
    torch.manual_seed(0)
    drafts = [[1, 4]] * TRIALS
    result = _run(SamplingParams(temperature=1.0), drafts)
    _check_distribution(result, result.tokens[:, 0] == 1)
    # acceptance of draft 1 happens with probability p_0(1) = 0.4
    rate = (result.counts >= 2).double().mean().item()
    assert abs(rate - 0.40) < 0.02


def test_draft_model_proposals_keep_the_target_distribution():
    torch.manual_seed(1)
    d = torch.stack([torch.multinomial(DRAFT_Q[j], TRIALS, replacement=True) for j in range(2)], dim=1)
    drafts = d.tolist()
    q = [DRAFT_Q] * TRIALS
    result = _run(SamplingParams(temperature=1.0), drafts, q)
    _check_distribution(result, result.counts >= 2)
    # acceptance at position 0: sum_x min(p(x), q(x))
    expected = torch.minimum(TARGET[0], DRAFT_Q[0]).sum().item()
    assert abs((result.counts >= 2).double().mean().item() - expected) < 0.02


def test_greedy_acceptance_is_exact():
    logits = TARGET.log()     # argmax: 1, then 4, then 0 (ties at p_2 go to the first index)
    params = SamplingParams(temperature=0)
    batch = SamplingBatch(params=[params] * 9, generators=[None] * 9)
    # sequence 0 drafts both right (2 accepted + bonus), 1 the first only, 2 none
    result = verify(logits.repeat(3, 1), batch, [2, 2, 2], [[1, 4], [1, 3], [2, 4]])
    assert result.counts.tolist() == [3, 2, 1]
    assert result.tokens[0].tolist() == [1, 4, 0]
    assert result.tokens[1, :2].tolist() == [1, 4]
    assert result.tokens[2, :1].tolist() == [1]


def test_sequences_without_drafts_sample_one_token():
    torch.manual_seed(2)
    params = SamplingParams(temperature=0)
    logits = torch.cat([TARGET[:1].log(), TARGET.log()])   # sequence 0: no drafts; sequence 1: two
    batch = SamplingBatch(params=[params] * 4, generators=[None] * 4)
    result = verify(logits, batch, [0, 2], [[], [1, 4]])
    assert result.counts.tolist() == [1, 3]
    assert result.tokens[0, 0].item() == 1 and result.tokens[1].tolist() == [1, 4, 0]


def test_logprobs_are_those_of_the_emitted_tokens():
    params = SamplingParams(temperature=0, logprobs=2)
    batch = SamplingBatch(params=[params] * 3, generators=[None] * 3)
    result = verify(TARGET.log(), batch, [2], [[1, 3]])
    assert result.counts.tolist() == [2]
    lp = result.logprobs
    assert lp.logprob_token_ids[0, 0].item() == 1 and lp.logprob_token_ids[1, 0].item() == 4
    assert torch.allclose(lp.logprobs[:2, 0], torch.tensor([0.40, 0.40]).log())
