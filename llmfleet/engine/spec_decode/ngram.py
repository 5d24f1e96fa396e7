"""N-gram prompt lookup: the tokens that followed the latest earlier occurrence of the sequence's own suffix.

No model: the proposal is a point mass on each token (the verifier accepts draft token d with probability
p_target(d) and otherwise samples from p_target with d taken out). It pays where the answer repeats the prompt:
editing code, summaries that quote, retrieval answers.
"""
from __future__ import annotations

import numpy as np


class NgramProposer:
    """Looks up the longest suffix first (prompt_lookup_max tokens down to prompt_lookup_min)."""

    def __init__(self, min_n: int, max_n: int):
        self.min_n, self.max_n = min_n, max_n

    def propose(self, token_ids: list[int], k: int) -> list[int]:
        """Up to k draft tokens continuing `token_ids` (prompt + output); [] when no suffix recurs."""
        size = len(token_ids)
        if size <= self.min_n or k <= 0:
            return []
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.max_n, size - 1), self.min_n - 1, -1):
            start = _latest_earlier(tokens, n)
            if start >= 0:
                follow = start + n
                return tokens[follow:follow + k].tolist()
        return []


def _latest_earlier(tokens: np.ndarray, n: int) -> int:
    """Start of the latest occurrence of the last n tokens that ends before the suffix itself, or -1."""
    suffix = tokens[-n:]
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n)   # starts 0 .. size - 1 - n
    hits = np.flatnonzero((windows == suffix).all(axis=1))
    return int(hits[-1]) if hits.size else -1
