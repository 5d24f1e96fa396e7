"""Incremental detokenization with stop strings.

Text grows token by token (a fast tokenizer's streaming decoder keeps this O(1) per token; other tokenizers
re-decode). While stop strings are set, the last (longest stop string - 1) characters are held back from
`visible_text`, so that a streamed client never receives the start of a stop string that is later cut off: the
visible text is always a prefix of the final text.
"""
from __future__ import annotations

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # older tokenizers
    DecodeStream = None

_PRIME_TOKENS = 8  # prompt tokens fed first so that the first output token is decoded in context


class Detokenizer:
    def __init__(self, tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool, stop: tuple[str, ...],
                 include_stop: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = stop
        self.include_stop = include_stop  # the text keeps the stop string that ended it
        self.hold_back = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.token_ids: list[int] = []
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream = None
        if DecodeStream is not None and backend is not None:
            self._backend = backend
            self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
            if prompt_token_ids:
                self._stream.step(backend, list(prompt_token_ids[-_PRIME_TOKENS:]))

    def append(self, token_id: int, check_stop: bool = True) -> str | None:
        """Adds one token; returns the stop string it completed (text is then cut before it, or after it with
        `include_stop`), else None. `check_stop` False (before min_tokens) lets stop strings pass."""
        before = len(self.text)
        self.token_ids.append(token_id)
        if self._stream is not None:
            self.text += self._stream.step(self._backend, token_id) or ""
        else:
            decoded = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
            if not decoded.endswith("\ufffd"):
                self.text = decoded
        return self._find_stop(before) if self.stop and check_stop else None

    def _find_stop(self, before: int) -> str | None:
        search_from = max(0, before - self.hold_back)
        best: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, search_from)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, s)
        if best is None:
            return None
        self.text = self.text[:best[0] + (len(best[1]) if self.include_stop else 0)]
        return best[1]

    def visible_text(self, finished: bool) -> str:
        if finished or not self.hold_back:
            return self.text
        return self.text[:max(0, len(self.text) - self.hold_back)]
