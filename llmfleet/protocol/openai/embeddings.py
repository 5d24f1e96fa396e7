"""Schemas of /v1/embeddings, shaped like OpenAI's (plus vLLM's `normalize` and `priority`)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from llmfleet.protocol.openai.common import INT32_MAX, StrictModel


class EmbeddingRequest(StrictModel):
    """Strict like every request: unknown fields are refused by name (or ignored with --lenient-requests)."""

    model: str | None = None
    # A string, a list of strings, a list of token ids, or a list of token-id lists (one vector per item).
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    normalize: bool | None = None     # None: what the model's config says
    priority: int = Field(0, ge=-INT32_MAX - 1, le=INT32_MAX)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str      # base64: the float32 little-endian bytes of the vector
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
