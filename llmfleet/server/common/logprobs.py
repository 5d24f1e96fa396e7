"""OpenAI's two logprob shapes, built from the engine's per-token {token_id: Logprob} dicts.

The engine gives, for each generated token, the sampled token's entry plus the top-N; -inf is sent as -9999.0
because JSON has no infinity.
"""
from __future__ import annotations

import math
from typing import Any

from llmfleet.protocol.outputs import CompletionOutput, Logprob

_FLOOR = -9999.0


def _value(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else _FLOOR


def _text(entry: Logprob | None, token_id: int, tokenizer: Any) -> str:
    if entry is not None and entry.decoded_token is not None:
        return entry.decoded_token
    return tokenizer.decode([token_id])


def completion_logprobs(choice: CompletionOutput, start: int, end: int, text_offset: int,
                        tokenizer: Any) -> dict | None:
    """Completions' shape for tokens [start, end): tokens, token_logprobs, top_logprobs, text_offset."""
    if choice.logprobs is None:
        return None
    tokens, values, tops, offsets = [], [], [], []
    for i in range(start, min(end, len(choice.logprobs), len(choice.token_ids))):
        token_id, entries = choice.token_ids[i], choice.logprobs[i]
        sampled = entries.get(token_id)
        text = _text(sampled, token_id, tokenizer)
        tokens.append(text)
        values.append(_value(sampled.logprob) if sampled is not None else None)
        top: dict[str, float] = {}
        for tid, e in sorted(entries.items(), key=lambda item: -item[1].logprob):
            top.setdefault(_text(e, tid, tokenizer), _value(e.logprob))  # tokens can share a text (e.g. "\ufffd")
        tops.append(top)
        offsets.append(text_offset)
        text_offset += len(text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(choice: CompletionOutput, start: int, end: int, top_n: int, tokenizer: Any) -> dict | None:
    """Chat's shape for tokens [start, end): {"content": [{token, logprob, bytes, top_logprobs}]}."""
    if choice.logprobs is None:
        return None
    content = []
    for i in range(start, min(end, len(choice.logprobs), len(choice.token_ids))):
        token_id, entries = choice.token_ids[i], choice.logprobs[i]
        sampled = entries.get(token_id)
        top = sorted(((e.rank, tid, e) for tid, e in entries.items() if e.rank <= top_n), key=lambda t: t[:2])
        content.append({**_chat_entry(sampled, token_id, tokenizer),
                        "top_logprobs": [_chat_entry(e, tid, tokenizer) for _, tid, e in top[:top_n]]})
    return {"content": content}


def _chat_entry(entry: Logprob | None, token_id: int, tokenizer: Any) -> dict:
    text = _text(entry, token_id, tokenizer)
    return {"token": text, "logprob": _value(entry.logprob) if entry is not None else _FLOOR,
            "bytes": list(text.encode("utf-8"))}


def echo_logprobs(prompt_ids: list[int], prompt_logprobs: list[dict[int, Logprob] | None] | None, top_n: int,
                  echo: str, tokenizer: Any) -> dict:
    """Completions' logprob shape for an echoed prompt: its first token has none (nothing predicts it). Offsets
    point into the echoed text `echo`; a token whose text it does not hold (a BOS the tokenizer added) sits where
    the next one starts."""
    tokens, values, tops, offsets, offset = [], [], [], [], 0
    for i, token_id in enumerate(prompt_ids):
        entries = prompt_logprobs[i] if prompt_logprobs is not None and i < len(prompt_logprobs) else None
        own = entries.get(token_id) if entries else None
        text = _text(own, token_id, tokenizer)
        tokens.append(text)
        values.append(_value(own.logprob) if own is not None else None)
        top = None
        if entries:
            top = {}
            for tid, e in sorted(entries.items(), key=lambda item: -item[1].logprob):
                if e.rank <= top_n or tid == token_id:
                    top.setdefault(_text(e, tid, tokenizer), _value(e.logprob))
        tops.append(top)
        at = echo.find(text, offset) if text else -1
        offsets.append(at if at >= 0 else offset)
        offset = at + len(text) if at >= 0 else offset
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def prompt_logprobs_field(prompt_logprobs: list[dict[int, Logprob] | None] | None) -> list[dict | None] | None:
    """vLLM's `prompt_logprobs` of a choice: per prompt token, {token id: {logprob, rank, decoded_token}}."""
    if prompt_logprobs is None:
        return None
    return [None if entries is None else
            {str(tid): {"logprob": _value(e.logprob), "rank": e.rank, "decoded_token": e.decoded_token}
             for tid, e in entries.items()} for entries in prompt_logprobs]
