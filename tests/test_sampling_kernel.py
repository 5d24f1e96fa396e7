"""The Gumbel-max sampling kernel draws from softmax(logits / T) (Triton's interpreter on CPU, compiled on GPU)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from llmfleet.kernels.sampling import gumbel_sample  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_tempered_softmax(temperature):
    torch.manual_seed(0)
    logits = torch.randn(8) * 2
    rows = 300
    tokens = gumbel_sample(logits.repeat(rows, 1).to(DEVICE),
                           torch.full((rows,), 1 / temperature, device=DEVICE), seed=11).cpu()
    freq = torch.bincount(tokens, minlength=8).float() / rows
    expected = (logits / temperature).softmax(-1)
    assert 0.5 * (freq - expected).abs().sum() < 0.1   # total variation; ~0.04 expected at 300 draws
    again = gumbel_sample(logits.repeat(rows, 1).to(DEVICE), torch.full((rows,), 1 / temperature, device=DEVICE),
                          seed=11).cpu()
    assert torch.equal(tokens, again)


def test_vocab_spanning_several_tiles_and_a_dominant_token():
    logits = torch.full((3, 5000), -10.0)
    logits[0, 4999] = logits[1, 2048] = logits[2, 0] = 30.0
    tokens = gumbel_sample(logits.to(DEVICE), torch.ones(3, device=DEVICE), seed=3).cpu()
    assert tokens.tolist() == [4999, 2048, 0]
