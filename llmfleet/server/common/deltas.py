"""What a stream already sent for each choice: engine outputs are cumulative, chunks carry only what is new."""
from __future__ import annotations

from collections.abc import Hashable

from llmfleet.protocol.outputs import CompletionOutput


class DeltaTracker:
    """Per choice key: characters and tokens already sent, and whether its final chunk went out."""

    def __init__(self) -> None:
        self._sent: dict[Hashable, tuple[int, int]] = {}
        self._done: set[Hashable] = set()

    def finished(self, key: Hashable) -> bool:
        """True once the chunk with `key`'s finish_reason went out."""
        return key in self._done

    def advance(self, key: Hashable, choice: CompletionOutput) -> tuple[str, int] | None:
        """(new text, index of the first new token) for `choice`, or None when it has nothing new to send."""
        if key in self._done:
            return None
        chars, tokens = self._sent.get(key, (0, 0))
        if len(choice.text) == chars and len(choice.token_ids) == tokens and choice.finish_reason is None:
            return None
        self._sent[key] = (len(choice.text), len(choice.token_ids))
        if choice.finish_reason is not None:
            self._done.add(key)
        return choice.text[chars:], tokens
