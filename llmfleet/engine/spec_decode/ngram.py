"""N-gram prompt lookup: the tokens that followed the latest earlier occurrence of the sequence's own suffix.

No model: the proposal is a point mass on each token (the verifier accepts draft token d with probability
p_target(d) and otherwise samples from p_target with d taken out). It pays where the answer repeats the prompt:
editing code, summaries that quote, retrieval answers.

Per step and sequence the lookup is a few vectorised passes: the positions c (before the last token) where the
last token recurs, then, for j = 1 .. max_n - 1, which of them still match j tokens further back. The longest match
(at least min_n, at most max_n tokens) wins, the latest among equals; the draft is what followed it. With a `key`
(the sequence's id) the token ids are mirrored in a growing numpy array, so only new tokens are converted.
"""
from __future__ import annotations

import numpy as np


class NgramProposer:
    """Looks up the longest suffix first (prompt_lookup_max tokens down to prompt_lookup_min)."""

    def __init__(self, min_n: int, max_n: int):
        self.min_n, self.max_n = min_n, max_n
        self._mirrors: dict[object, tuple[np.ndarray, int]] = {}

    def propose(self, token_ids: list[int], k: int, key: object = None) -> list[int]:
        """Up to k draft tokens continuing `token_ids` (prompt + output); [] when no suffix recurs."""
        size = len(token_ids)
        if size <= self.min_n or k <= 0:
            return []
        tokens = self._tokens(token_ids, key)
        follow = _longest_match(tokens, self.min_n, self.max_n)
        return tokens[follow:follow + k].tolist() if follow >= 0 else []

    def forget(self, keep: set) -> None:
        """Drops the mirrors of sequences not in `keep` (finished or preempted ones)."""
        for key in [k for k in self._mirrors if k not in keep]:
            del self._mirrors[key]

    def _tokens(self, token_ids: list[int], key: object) -> np.ndarray:
        size = len(token_ids)
        if key is None:
            return np.asarray(token_ids, dtype=np.int64)
        array, known = self._mirrors.get(key, (None, 0))
        if array is None or known > size or array.shape[0] < size:
            grown = np.empty(max(2 * size, 256), dtype=np.int64)
            if array is not None and known <= size:
                grown[:known] = array[:known]
            else:
                known = 0
            array = grown
        array[known:size] = token_ids[known:size]
        self._mirrors[key] = (array, size)
        return array[:size]


def _longest_match(tokens: np.ndarray, min_n: int, max_n: int) -> int:
    """Index just after the latest earlier occurrence of the longest suffix of min_n..max_n tokens, or -1."""
    size = tokens.shape[0]
    ends = np.flatnonzero(tokens[:-1] == tokens[-1])           # candidate occurrence ends c < size - 1
    if ends.size == 0:
        return -1
    length = np.ones(ends.shape[0], dtype=np.int64)             # matched tokens ending at c
    alive = np.ones(ends.shape[0], dtype=bool)
    for j in range(1, max_n):
        back = ends - j
        alive &= back >= 0
        alive &= tokens[np.maximum(back, 0)] == tokens[size - 1 - j]
        if not alive.any():
            break
        length += alive
    best = int(length.max())
    if best < min_n:
        return -1
    return int(ends[np.flatnonzero(length >= best)[-1]]) + 1
