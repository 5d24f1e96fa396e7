"""Schemas shared by the completion and chat endpoints: sampling fields, stream options, usage, model list.

Ranges that SamplingParams already checks are left to it (its ValueError names the field and becomes a 400). Here
only what must never reach the engine is bounded: n (memory), seed (torch's generator range), top_k (tensor range),
non-finite floats.
Requests are strict: types are not coerced (`true` is not the number 1, "5" is not 5), and unknown fields are kept
aside (pydantic's extra="allow") for the server to refuse by name (`unknown_fields`), or to ignore when it runs with
--lenient-requests.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 128
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # int64; the n samples' derived seeds stay in torch's range
INT32_MAX = (1 << 31) - 1


class StrictModel(BaseModel):
    """A request object: no type coercion, non-finite floats refused, unknown fields kept for `unknown_fields`."""
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


def unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Dotted paths (`messages.0.foo`) of the fields that `model` and the request objects it holds do not know."""
    found = [_join(path, name) for name in (model.model_extra or {})]
    for name in model.model_fields_set:
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if isinstance(item, BaseModel):
                found += unknown_fields(item, _join(_join(path, name), i))
    return found


def _join(path: str, name) -> str:
    if name is None:
        return path
    return f"{path}.{name}" if path else str(name)


class StreamOptions(StrictModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False   # with include_usage: usage in every chunk, not only the last


class StructuredOutputsField(StrictModel):
    """vLLM's `structured_outputs` object: exactly one constraint."""
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None


class SamplingFields(StrictModel):
    """Fields both endpoints accept; vLLM's extras (top_k, min_p, ignore_eos, ...) included."""

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, le=INT32_MAX)  # bounded: the sampler packs it into an int64 tensor
    min_p: float | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    priority: int = Field(0, ge=-INT32_MAX - 1, le=INT32_MAX)
    logit_bias: dict[str, float] | None = None     # token id (as a string, JSON keys are) -> bias in [-100, 100]
    min_tokens: int = Field(0, ge=0, le=INT32_MAX)
    include_stop_str_in_output: bool = False
    # Structured outputs (server/common/structured.py turns at most one of them into a StructuredSpec)
    response_format: dict[str, Any] | None = None    # OpenAI's: text | json_object | json_schema
    guided_json: dict[str, Any] | str | None = None  # vLLM's older fields
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    structured_outputs: StructuredOutputsField | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        """Usage in every chunk of the stream (with include_usage, as vLLM reads continuous_usage_stats)."""
        return self.include_usage and bool(self.stream_options.continuous_usage_stats)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> "UsageInfo":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens))


class ResponseHeader(BaseModel):
    """The fields every completion response and stream chunk starts with (`object` is each subclass's own)."""
    id: str
    created: int
    model: str
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmfleet"
    root: str | None = None
    parent: str | None = None      # a LoRA adapter's base model (None: a base model)
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    instance: str | None = None   # the serving process (stored response ids carry it: a gateway routes by it)
