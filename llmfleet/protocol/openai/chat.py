"""Schemas of /v1/chat/completions, shaped like OpenAI's (plus vLLM's extras from SamplingFields)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer

from llmfleet.protocol.openai.common import ResponseHeader, SamplingFields, StrictModel, UsageInfo
from llmfleet.protocol.openai.completions import PromptLogprob


class ContentPart(StrictModel):
    type: str
    text: str | None = None


class FunctionCall(StrictModel):
    name: str
    arguments: str                                # JSON text of the arguments object


class ToolCall(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None      # an assistant turn that called tools
    tool_call_id: str | None = None               # a tool's answer: to which call


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None      # a JSON schema of the arguments object
    strict: bool | None = None


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None                 # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)  # vLLM's: top-N per token of the rendered prompt
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # None: auto with tools
    parallel_tool_calls: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False      # the prompt ends inside the last (assistant) message, continued
    echo: bool = False                        # the last message's content starts the answer when it is the assistant's
    chat_template: str | None = None          # a Jinja template in place of the model's
    chat_template_kwargs: dict[str, Any] | None = None  # extra variables for the template (e.g. enable_thinking)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class _Delta(BaseModel):
    """A streamed piece: OpenAI's deltas carry only the keys that changed, so None fields are left out."""

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return {k: v for k, v in handler(self).items() if v is not None}


class DeltaFunctionCall(_Delta):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Delta):
    """One piece of a streamed tool call: its first carries id, type and the name; later ones argument text."""
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(ResponseHeader):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: UsageInfo
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None  # vLLM's, when asked (the first: None)


class DeltaMessage(_Delta):
    """{"role", "content"}, {"content"}, {"tool_calls"} or {}."""
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(ResponseHeader):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
