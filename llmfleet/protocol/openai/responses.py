"""Schemas of /v1/responses (OpenAI's Responses API): the request and the input items it accepts.

The answer objects (a response, its output items, stream events) are built as plain dicts in
server/responses/output.py, in the shapes the official client parses. Input items take back what earlier
responses returned (assistant messages with output_text parts, function calls) beside new user turns and
function-call outputs, so `input=[*previous.output, {"type": "function_call_output", ...}]` works.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import Field

from llmfleet.protocol.openai.common import INT32_MAX, SEED_MAX, SEED_MIN, StrictModel


_RESPONSE_ID = re.compile(r"resp_([0-9a-f]{12})[0-9a-f]{32}")


def new_response_id(instance: str) -> str:
    """A response id naming the serving process (`instance`: 12 hex digits), so a gateway can route follow-ups."""
    return f"resp_{instance}{uuid.uuid4().hex}"


def instance_of(response_id: str) -> str | None:
    """The serving process an id from `new_response_id` names; None for any other string."""
    match = _RESPONSE_ID.fullmatch(response_id)
    return match.group(1) if match else None


class InputPart(StrictModel):
    """A content part: input_text (user turns), output_text (an earlier answer); others are refused by name."""
    type: str
    text: str | None = None
    annotations: list[Any] | None = None       # output_text of an earlier response, handed back
    logprobs: list[Any] | None = None
    image_url: str | None = None               # input_image / input_file: known, refused as unsupported
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None
    detail: str | None = None


class InputItem(StrictModel):
    """One input item: a message (with or without type "message"), a function_call or a function_call_output."""
    type: Literal["message", "function_call", "function_call_output"] | None = None
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[InputPart] | None = None
    id: str | None = None
    status: str | None = None
    phase: str | None = None
    call_id: str | None = None                 # function_call and function_call_output
    name: str | None = None                    # function_call
    arguments: str | None = None               # function_call: JSON text
    output: str | list[InputPart] | None = None  # function_call_output


class FunctionTool(StrictModel):
    """A function tool, flat as the Responses API spells it (chat nests the same under "function")."""
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(StrictModel):
    type: Literal["function"]
    name: str


class TextFormat(StrictModel):
    """text.format: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name", "schema", ...}."""
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(StrictModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(StrictModel):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None            # a system message; not carried to a follow-up response
    previous_response_id: str | None = None    # continue a stored response's conversation
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None
    truncation: Literal["disabled", "auto"] | None = None
    background: bool = False
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    # vLLM's sampling extras, as on the other endpoints
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    top_k: int | None = Field(None, le=INT32_MAX)
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    priority: int = Field(0, ge=-INT32_MAX - 1, le=INT32_MAX)
