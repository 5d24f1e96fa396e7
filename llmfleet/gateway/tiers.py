"""Tiered routing: a virtual model name (say `auto`) sends each request to the cheapest tier whose rules it passes.

In fleet.yaml, tiers cheapest first; the last one takes whatever the others turned down:

    tiers:
      auto:
        - {model: small, max_prompt_tokens: 512, escalate_on: ["(?i)prove|step by step"], min_mean_logprob: -1.2}
        - {model: large}

A tier turns a request down when its prompt is longer than `max_prompt_tokens` (counted with the gateway's
tokenizer, else estimated as characters / 4) or its text matches one of `escalate_on`. The chosen tier and the
reason travel back in the x-llmfleet-tier and x-llmfleet-tier-reason headers.

`min_mean_logprob` judges the tier's own answer (escalation.py): a non-streaming request it took is answered with
token logprobs (asked for if the client did not, and stripped again), and an answer whose mean token logprob is
below the threshold is thrown away and the request sent on to the next tier.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tier:
    model: str
    max_prompt_tokens: int | None = None
    escalate_on: tuple[str, ...] = ()
    min_mean_logprob: float | None = None   # an answer less sure than this (mean token logprob) goes up a tier

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("tiers.model: must be a non-empty model name")
        if self.max_prompt_tokens is not None and (not isinstance(self.max_prompt_tokens, int)
                                                   or self.max_prompt_tokens < 1):
            raise ValueError(f"tiers.max_prompt_tokens: must be a positive integer, got {self.max_prompt_tokens!r}")
        if self.min_mean_logprob is not None and (isinstance(self.min_mean_logprob, bool) or not isinstance(
                self.min_mean_logprob, (int, float)) or self.min_mean_logprob > 0):
            raise ValueError(f"tiers.min_mean_logprob: must be a number <= 0, got {self.min_mean_logprob!r}")
        for pattern in self.escalate_on:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"tiers.escalate_on: {pattern!r} is not a regular expression: {exc}") from None


def parse_tiers(data: Any) -> dict[str, tuple[Tier, ...]]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("tiers: must map virtual model names to lists of tiers")
    tiers = {}
    for name, items in data.items():
        if not isinstance(items, list) or not items or any(not isinstance(t, dict) for t in items):
            raise ValueError(f"tiers.{name}: must be a non-empty list of {{model, max_prompt_tokens, escalate_on}}")
        for t in items:
            unknown = sorted(set(t) - {"model", "max_prompt_tokens", "escalate_on", "min_mean_logprob"})
            if unknown:
                raise ValueError(f"tiers.{unknown[0]}: unknown tier setting")
        tiers[str(name)] = tuple(Tier(t.get("model"), t.get("max_prompt_tokens"), tuple(t.get("escalate_on") or ()),
                                      t.get("min_mean_logprob")) for t in items)
    return tiers


class TierRouter:
    def __init__(self, tiers: dict[str, tuple[Tier, ...]], hasher=None):
        self.tiers, self.hasher = tiers, hasher
        self._patterns = {t: [re.compile(p) for p in t.escalate_on] for ts in tiers.values() for t in ts}

    def names(self) -> list[str]:
        return sorted(self.tiers)

    def resolve(self, model: str | None, path: str, payload: dict) -> tuple[Tier, str] | None:
        """(the tier, why) for a virtual model; None for any other model name."""
        tiers = self.tiers.get(model) if model else None
        if not tiers:
            return None
        text = _prompt_text(payload)
        length = self._length(path, payload, text)
        reasons = []
        for tier in tiers[:-1]:
            why = self._turned_down(tier, text, length)
            if why is None:
                return tier, "; ".join(reasons) or "cheapest tier"
            reasons.append(f"{tier.model}: {why}")
        return tiers[-1], "; ".join(reasons)

    def after(self, model: str, tier: Tier) -> Tier | None:
        """The tier above `tier` in virtual model `model`; None for the last one."""
        tiers = self.tiers[model]
        index = tiers.index(tier)
        return tiers[index + 1] if index + 1 < len(tiers) else None

    def _turned_down(self, tier: Tier, text: str, length: int) -> str | None:
        if tier.max_prompt_tokens is not None and length > tier.max_prompt_tokens:
            return f"prompt {length} tokens > {tier.max_prompt_tokens}"
        for pattern in self._patterns[tier]:
            if pattern.search(text):
                return f"matched {pattern.pattern!r}"
        return None

    def _length(self, path: str, payload: dict, text: str) -> int:
        ids = self.hasher.token_ids(path, payload) if self.hasher is not None else None
        prompt = payload.get("prompt")
        if ids is None and isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            ids = prompt
        return len(ids) if ids is not None else -(-len(text) // 4)


def _prompt_text(payload: dict) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return "\n".join(p for p in prompt if isinstance(p, str))
    messages = payload.get("messages")
    if isinstance(messages, list):
        return "\n".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return ""
