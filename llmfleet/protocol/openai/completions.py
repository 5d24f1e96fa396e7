"""Schemas of /v1/completions, shaped like OpenAI's (plus vLLM's extras from SamplingFields)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from llmfleet.protocol.openai.common import MAX_N, ResponseHeader, SamplingFields, UsageInfo


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16               # None: up to the context limit
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False                        # the prompt's text (and its logprobs when asked) comes first
    suffix: str | None = None                 # fill in the middle: only for models with FIM tokens
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(BaseModel):
    logprob: float
    rank: int
    decoded_token: str | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None  # per prompt token (the first: None)


class CompletionResponse(ResponseHeader):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionStreamResponse(ResponseHeader):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
