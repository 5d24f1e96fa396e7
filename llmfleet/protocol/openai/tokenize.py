"""Schemas of /tokenize and /detokenize (vLLM's shapes): a prompt or chat messages to token ids, and back."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from llmfleet.protocol.openai.chat import ChatMessage
from llmfleet.protocol.openai.common import StrictModel


class TokenizeRequest(StrictModel):
    """Exactly one of `prompt` (text) and `messages` (rendered with the chat template first)."""
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = None        # default: True for a prompt, False for messages (the template's)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(StrictModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str
