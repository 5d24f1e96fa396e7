"""A /v1/responses request as the chat request that answers it, and the conversation turns it adds.

The Responses API is chat with other spellings: `instructions` is a system message (not carried to a follow-up),
input items are turns (function calls become an assistant turn's tool_calls, their outputs tool turns),
`max_output_tokens` is max_completion_tokens, `text.format` is response_format, and function tools are flat.
Errors the chat checks raise name the chat field; `renamed` puts them back into this API's words.
"""
from __future__ import annotations

from pydantic import ValidationError

from llmfleet.protocol.openai.chat import ChatCompletionRequest
from llmfleet.protocol.openai.responses import InputItem, InputPart, ResponsesRequest
from llmfleet.server.errors import APIError

LOGPROBS_INCLUDE = "message.output_text.logprobs"
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# chat's field -> the Responses API's
_FIELD_NAMES = {"messages": "input", "max_completion_tokens": "max_output_tokens", "response_format": "text.format",
                "max_tokens": "max_output_tokens"}


def to_chat(req: ResponsesRequest, history: list[dict]) -> tuple[ChatCompletionRequest, list[dict]]:
    """(the chat request answering `req` after `history`, the turns `req.input` adds). Raises APIError (400)."""
    _refuse_unsupported(req)
    turns = input_turns(req.input)
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    fields = {"model": req.model, "messages": system + history + turns, "max_completion_tokens": req.max_output_tokens,
              "temperature": req.temperature, "top_p": req.top_p, "tools": _tools(req), "tool_choice": _choice(req),
              "parallel_tool_calls": req.parallel_tool_calls, "response_format": _format(req), "user": req.user,
              "seed": req.seed, "top_k": req.top_k, "min_p": req.min_p, "presence_penalty": req.presence_penalty,
              "frequency_penalty": req.frequency_penalty, "repetition_penalty": req.repetition_penalty,
              "stop": req.stop, "ignore_eos": req.ignore_eos, "priority": req.priority}
    if wants_logprobs(req):
        fields |= {"logprobs": True, "top_logprobs": req.top_logprobs or 0}
    try:
        chat = ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise APIError(400, f"input: {first['msg']}", "input", "invalid_value") from None
    return chat, turns


def wants_logprobs(req: ResponsesRequest) -> bool:
    return LOGPROBS_INCLUDE in (req.include or [])


def renamed(error: APIError) -> APIError:
    """`error` with a chat field name (param and the message's leading `field:`) in this API's words."""
    if error.param is None:
        return error
    head, _, rest = error.param.partition(".")
    if head not in _FIELD_NAMES:
        return error
    param = _FIELD_NAMES[head] + (f".{rest}" if rest else "")
    message = error.message.replace(error.param, param, 1) if error.message.startswith(error.param) else error.message
    return APIError(error.status, message, param, error.code, error.retry_after)


def input_turns(value: str | list[InputItem]) -> list[dict]:
    """Chat messages of the input: a string is one user turn; consecutive function calls join one assistant
    turn (the one just before them when it is the assistant's)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not value:
        raise APIError(400, "input: give at least one item", "input", "invalid_value")
    turns: list[dict] = []
    for i, item in enumerate(value):
        kind = item.type or "message"
        if kind == "message":
            turns.append(_message(item, f"input.{i}"))
        elif kind == "function_call":
            _call(turns, item, f"input.{i}")
        else:
            _require(item.call_id, f"input.{i}.call_id")
            _require(item.output, f"input.{i}.output")
            turns.append({"role": "tool", "tool_call_id": item.call_id,
                          "content": _text(item.output, f"input.{i}.output")})
    return turns


def _message(item: InputItem, where: str) -> dict:
    _require(item.role, f"{where}.role")
    _require(item.content, f"{where}.content")
    return {"role": item.role, "content": _text(item.content, f"{where}.content")}


def _call(turns: list[dict], item: InputItem, where: str) -> None:
    for name in ("call_id", "name", "arguments"):
        _require(getattr(item, name), f"{where}.{name}")
    call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
    if turns and turns[-1]["role"] == "assistant":
        turns[-1].setdefault("tool_calls", []).append(call)
    else:
        turns.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _text(content: str | list[InputPart], where: str) -> str:
    if isinstance(content, str):
        return content
    for j, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise APIError(400, f"{where}.{j}: only text parts are supported (input_text, output_text), got "
                                f"{part.type!r}", f"{where}.{j}", "unsupported")
    return "\n".join(part.text for part in content)


def _require(value, where: str) -> None:
    if value is None:
        raise APIError(400, f"{where}: required for this item", where, "invalid_value")


def _tools(req: ResponsesRequest) -> list[dict] | None:
    if req.tools is None:
        return None
    return [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in req.tools]


def _choice(req: ResponsesRequest):
    if req.tool_choice is None or isinstance(req.tool_choice, str):
        return req.tool_choice
    return {"type": "function", "function": {"name": req.tool_choice.name}}


def _format(req: ResponsesRequest) -> dict | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.name is None or fmt.schema_ is None:
        raise APIError(400, "text.format: json_schema needs `name` and `schema`", "text.format", "invalid_value")
    schema = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict,
              "description": fmt.description}
    return {"type": "json_schema", "json_schema": {k: v for k, v in schema.items() if v is not None}}


def _refuse_unsupported(req: ResponsesRequest) -> None:
    """Fields this server cannot honour are refused by name, never silently dropped."""
    refused = [("background", req.background, "runs in the foreground only (stream for long answers)"),
               ("truncation", req.truncation == "auto", 'supports "disabled" only: a too-long input is a 400'),
               ("reasoning", req.reasoning is not None, "the served model has no reasoning settings"),
               ("text.verbosity", req.text is not None and req.text.verbosity is not None,
                "the served model has no verbosity setting"),
               ("service_tier", req.service_tier not in (None, "auto", "default"), "one tier is served")]
    for field, bad, why in refused:
        if bad:
            raise APIError(400, f"{field}: this server {why}", field, "unsupported")
    for i, name in enumerate(req.include or []):
        if name != LOGPROBS_INCLUDE:
            raise APIError(400, f"include.{i}: only {LOGPROBS_INCLUDE!r} is available, got {name!r}",
                           f"include.{i}", "unsupported")
    if req.top_logprobs is not None and not wants_logprobs(req):
        raise APIError(400, f"top_logprobs: needs include=[{LOGPROBS_INCLUDE!r}]", "top_logprobs", "invalid_value")
