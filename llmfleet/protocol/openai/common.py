"""Schemas shared by the completion and chat endpoints: sampling fields, stream options, usage, model list.

Ranges that SamplingParams already checks are left to it (its ValueError names the field and becomes a 400). Here
only what must never reach the engine is bounded: n (memory), seed (torch's generator range), top_k (tensor range),
non-finite floats.
Unknown fields are ignored, as OpenAI-compatible servers do, so newer clients keep working.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 128
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # int64; the n samples' derived seeds stay in torch's range
INT32_MAX = (1 << 31) - 1


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = False


class StructuredOutputsField(BaseModel):
    """vLLM's `structured_outputs` object: exactly one constraint."""
    model_config = ConfigDict(extra="forbid")
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None


class SamplingFields(BaseModel):
    """Fields both endpoints accept; vLLM's extras (top_k, min_p, ignore_eos, ...) included."""
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

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
    logit_bias: dict[str, float] | None = None
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
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
