"""Tool calling for /v1/chat/completions: what `tools` and `tool_choice` ask, and how calls are read back.

- no tools, or tool_choice "none": tools are not rendered; the answer is plain content.
- "auto" (the default with tools): tools are rendered through the chat template; the server's `--tool-call-parser`
  reads calls out of the text (tool_parsers.py); text without calls is content.
- "required" or a named function: a grammar forces the answer into JSON calls (a JSON schema of the call list, or
  of the named function's arguments), so the calls always parse and their arguments match the tool's schema.
Every call reader has the parsers' interface: `start(text)` (where calls may begin) and `calls(text, final)`.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from llmfleet.engine.structured.grammar import check
from llmfleet.protocol.openai.chat import ChatCompletionRequest, FunctionCall, ToolCall, ToolDefinition
from llmfleet.protocol.structured import StructuredSpec
from llmfleet.server.chat.tool_parsers import PARSERS, ParsedCall, call_of
from llmfleet.server.errors import APIError


class PlainReader:
    """No tools: everything is content."""
    may_call = False

    def start(self, text: str) -> int:
        return len(text)

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        return []


class ForcedReader:
    """The grammar made the whole answer JSON: the named function's arguments, or a list of calls."""
    may_call = True

    def __init__(self, name: str | None):
        self.name = name   # None: "required", a list of {"name", "parameters"}

    def start(self, text: str) -> int:
        return 0

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        if not final:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return []  # cut short by max_tokens: the text stays content
        if self.name is not None:
            call = call_of({"name": self.name, "arguments": value}, "arguments")
            return [call] if call else []
        found = [call_of(item, "parameters") for item in value] if isinstance(value, list) else []
        return found if found and all(found) else []


@dataclass(slots=True)
class ToolPlan:
    template_tools: list[dict] | None     # what the chat template renders (None: no tools)
    spec: StructuredSpec | None           # the grammar of a required / named choice
    reader: object                        # PlainReader, ForcedReader or a tool parser


def plan_tools(req: ChatCompletionRequest, parser_name: str | None) -> ToolPlan:
    """How this request uses tools; raises APIError (400) for a choice the tools or the server cannot meet."""
    tools = req.tools or []
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if tools else "none")
    if choice == "none":
        return ToolPlan(None, None, PlainReader())
    if not tools:
        raise APIError(400, "tool_choice: needs `tools`", "tool_choice", "invalid_value")
    rendered = [tool.model_dump(exclude_none=True) for tool in tools]
    if choice == "auto":
        if parser_name is None:
            raise APIError(400, 'tool_choice: "auto" needs the server started with --tool-call-parser (or use '
                                '"required" or a named function)', "tool_choice", "unsupported")
        return ToolPlan(rendered, None, PARSERS[parser_name]())
    if choice == "required":
        spec = StructuredSpec("json", json.dumps(_calls_schema(tools, req.parallel_tool_calls)))
        reader = ForcedReader(None)
    else:
        tool = next((t for t in tools if t.function.name == choice.function.name), None)
        if tool is None:
            raise APIError(400, f"tool_choice.function.name: {choice.function.name!r} is not among the tools",
                           "tool_choice.function.name", "invalid_value")
        spec = StructuredSpec("json", json.dumps(_parameters(tool)))
        reader = ForcedReader(tool.function.name)
    try:
        check(spec, "tools")
    except ValueError as exc:
        raise APIError.from_value_error(exc) from None
    return ToolPlan(rendered, spec, reader)


def _parameters(tool: ToolDefinition) -> dict:
    return tool.function.parameters or {"type": "object"}


def _calls_schema(tools: list[ToolDefinition], parallel: bool) -> dict:
    """A JSON list of calls, each {"name": one tool, "parameters": that tool's arguments}."""
    one = [{"type": "object", "properties": {"name": {"enum": [t.function.name]}, "parameters": _parameters(t)},
            "required": ["name", "parameters"]} for t in tools]
    schema = {"type": "array", "minItems": 1, "items": {"anyOf": one}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def extract(reader, text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content, calls) of a whole answer. With calls, content is the text before them (None when blank)."""
    start = reader.start(text)
    calls = reader.calls(text[start:], final=True) if start < len(text) else []
    if not calls:
        return text, []
    return text[:start].rstrip() or None, calls


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_calls(calls: list[ParsedCall]) -> list[ToolCall]:
    return [ToolCall(id=new_call_id(), function=FunctionCall(name=name, arguments=args)) for name, args in calls]


def finish_reason(reason: str | None, has_calls: bool) -> str | None:
    """OpenAI's "tool_calls" when an answer that ended by itself called tools."""
    return "tool_calls" if has_calls and reason == "stop" else reason
