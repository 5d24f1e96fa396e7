"""Speculative decoding options, spelled as vLLM spells them: `speculative_config={"method": "ngram", ...}`.

Imports no torch: the API server validates a `--speculative-config` JSON before the engine starts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

NGRAM_METHODS = ("ngram",)
DRAFT_METHODS = ("draft", "draft_model")   # a smaller model sharing the target's tokenizer
EAGLE_METHODS = ("eagle", "eagle3")         # a head over the target's hidden states (model/models/eagle.py)
METHODS = NGRAM_METHODS + DRAFT_METHODS + EAGLE_METHODS


@dataclass(frozen=True, slots=True)
class SpeculativeConfig:
    method: str
    num_speculative_tokens: int = 4           # most draft tokens verified per sequence and step
    prompt_lookup_max: int = 4                # ngram: the longest suffix n-gram looked up in the sequence
    prompt_lookup_min: int = 2                # ngram: the shortest one
    model: str | None = None                  # draft / eagle: its folder or demo name (the target's tokenizer)
    # Speculation is off in a step when more sequences than this are running or waiting: a large batch is
    # compute-bound, where verifying drafts costs more than it saves. None: never off.
    disable_by_batch_size: int | None = 32
    adaptive: bool = True                     # per sequence, the draft length follows its acceptance

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative_config.method: unknown value {self.method!r}; use one of "
                             f"{', '.join(METHODS)}")
        for name in ("num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"speculative_config.{name}: must be a positive integer, got {value!r}")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(f"speculative_config.prompt_lookup_min: {self.prompt_lookup_min} is above "
                             f"prompt_lookup_max {self.prompt_lookup_max}")
        if self.method not in NGRAM_METHODS and not self.model:
            raise ValueError(f"speculative_config.model: method {self.method!r} needs the draft model's path")
        if self.method in NGRAM_METHODS and self.model is not None:
            raise ValueError("speculative_config.model: the ngram method uses no model")
        limit = self.disable_by_batch_size
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"speculative_config.disable_by_batch_size: must be a positive integer or None, "
                             f"got {limit!r}")

    @property
    def uses_draft_model(self) -> bool:
        """Whether a model on the worker proposes (a draft model or an EAGLE head), rather than n-gram lookup."""
        return self.method in DRAFT_METHODS + EAGLE_METHODS

    @property
    def uses_eagle(self) -> bool:
        return self.method in EAGLE_METHODS

    @classmethod
    def parse(cls, value: "SpeculativeConfig | dict | str | None") -> "SpeculativeConfig | None":
        """From a dict (the `LLM(speculative_config=...)` form), a JSON object string (`--speculative-config`),
        or an instance; ValueError naming the field for anything else."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"speculative_config: not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"speculative_config: must be a JSON object / dict, got {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"speculative_config.{unknown[0]}: unknown field; known: {', '.join(sorted(known))}")
        if "method" not in value:
            raise ValueError(f"speculative_config.method: required ({', '.join(METHODS)})")
        return cls(**value)
