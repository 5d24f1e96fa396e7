"""N-gram lookup (engine/spec_decode/ngram.py) against a plain-Python reference: the longest suffix of
min_n..max_n tokens that occurred earlier, its latest occurrence, what followed it; the incremental mirror gives the
same drafts as a fresh array while the sequence grows, and forgets the sequences it is told to."""
from __future__ import annotations

import random

from llmfleet.engine.spec_decode.ngram import NgramProposer


def reference(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    if len(tokens) <= min_n or k <= 0:
        return []
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        suffix = tokens[-n:]
        starts = [s for s in range(len(tokens) - n) if tokens[s:s + n] == suffix]
        if starts:
            return tokens[starts[-1] + n:starts[-1] + n + k]
    return []


def test_matches_the_reference_as_sequences_grow():
    rng = random.Random(0)
    for _ in range(400):
        min_n = rng.randint(1, 3)
        max_n = rng.randint(min_n, 5)
        proposer = NgramProposer(min_n, max_n)
        tokens = [rng.randrange(4) for _ in range(rng.randint(1, 8))]
        for _ in range(6):
            k = rng.randint(0, 5)
            expected = reference(tokens, k, min_n, max_n)
            assert proposer.propose(tokens, k, key="seq") == expected
            assert proposer.propose(tokens, k) == expected
            tokens = tokens + [rng.randrange(4) for _ in range(rng.randint(1, 30))]


def test_examples_and_forget():
    proposer = NgramProposer(2, 4)
    assert proposer.propose([1, 2, 3, 9, 1, 2, 3], 2, key=7) == [9, 1]   # the 3-token suffix recurs
    assert proposer.propose([5, 6, 7, 8], 3, key=8) == []                # nothing recurs
    proposer.forget({7})
    assert set(proposer._mirrors) == {7}
