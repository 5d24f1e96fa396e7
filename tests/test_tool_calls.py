"""Tool calling: the three parsers on model-shaped text, the streamer against the whole-answer reading on every
split of the text, and through the `openai` client: required and named tool choices forced by the grammar (their
calls parse, their arguments match the tool's schema, streamed equals whole), tool turns in the conversation,
and the 400s."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.chat.tool_parsers import PARSERS
from llmfleet.server.chat.tool_stream import ToolStream
from llmfleet.server.chat.tools import ForcedReader, PlainReader, extract
from llmfleet.server.config import ServerConfig

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
           "required": ["city", "days"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"]}}}]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]

PARSED = [
    ("hermes", 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
               '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>',
     "Let me check.", [("get_weather", '{"city": "Paris", "days": 2}'), ("get_time", '{"tz": "UTC"}')]),
    ("hermes", '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}', None,
     [("get_time", '{"tz": "CET"}')]),                                    # cut before its closing tag
    ("hermes", "No tools needed: 2 < 3 <tool", "No tools needed: 2 < 3 <tool", []),
    ("hermes", '<tool_call>{"name": broken}</tool_call>', '<tool_call>{"name": broken}</tool_call>', []),
    ("mistral", 'Sure[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome", "days": 1}}]', "Sure",
     [("get_weather", '{"city": "Rome", "days": 1}')]),
    ("mistral", '[TOOL_CALLS] [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\\"x\\": 1}"}]',
     None, [("a", "{}"), ("b", '{"x": 1}')]),
    ("llama3_json", '{"name": "get_time", "parameters": {"tz": "UTC"}}', None, [("get_time", '{"tz": "UTC"}')]),
    ("llama3_json", '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"k": [1]}}',
     None, [("a", "{}"), ("b", '{"k": [1]}')]),
    ("llama3_json", '{"weather": "sunny"}', '{"weather": "sunny"}', []),
    ("llama3_json", "Plain words.", "Plain words.", []),
]


@pytest.mark.parametrize("parser, text, content, calls", PARSED)
def test_parsers_read_calls_and_content(parser, text, content, calls):
    assert extract(PARSERS[parser](), text) == (content, calls)


def _streamed(reader, pieces: list[str]) -> tuple[str, list[tuple[str, str]]]:
    stream, deltas = ToolStream(reader), []
    for piece in pieces:
        deltas += stream.feed(piece)
    deltas += stream.finish()
    content, calls = "", {}
    for delta in deltas:
        content += delta.content or ""
        for call in delta.tool_calls or []:
            if call.id is not None:          # a call opens with its id and name, then its arguments follow
                assert call.index == len(calls) and call.function.arguments == ""
                calls[call.index] = [call.function.name, ""]
            else:
                calls[call.index][1] += call.function.arguments
    return content, [tuple(c) for c in calls.values()]


@pytest.mark.parametrize("parser, text, content, calls", PARSED)
def test_streamed_reading_equals_whole_reading_at_every_split(parser, text, content, calls):
    for cut in range(1, len(text)):
        for pieces in ([text[:cut], text[cut:]], [text[i:i + cut] for i in range(0, len(text), cut)]):
            assert _streamed(PARSERS[parser](), pieces) == (content or "", calls), pieces


def test_forced_and_plain_readers():
    assert extract(ForcedReader("get_time"), '{"tz": "UTC"}') == (None, [("get_time", '{"tz": "UTC"}')])
    assert extract(ForcedReader(None), '[{"name": "a", "parameters": {"x": 1}}]') == (None, [("a", '{"x": 1}')])
    assert extract(ForcedReader(None), '[{"name": "a", "param') == ('[{"name": "a", "param', [])  # cut short
    assert extract(PlainReader(), "<tool_call>{}") == ("<tool_call>{}", [])


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("qwen2")), device="cpu", dtype="float32", num_kv_blocks=128,
                          max_model_len=512)
    app = create_app(ServerConfig(served_model_names=("tiny",), tool_call_parser="hermes"), config)
    with BackgroundServer(app) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _ask(client, stream: bool, **kw):
    kw = {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": 120, "tools": TOOLS, **kw}
    if not stream:
        choice = client.chat.completions.create(**kw).choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        assert all(c.id.startswith("call_") and c.type == "function" for c in choice.message.tool_calls or [])
        return choice.message.content, calls, choice.finish_reason
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            if call.id:
                calls[call.index] = [call.function.name, call.function.arguments or ""]
            else:
                calls[call.index][1] += call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    return content or None, [tuple(c) for c in calls.values()], finish


@pytest.mark.parametrize("tool_choice, parallel", [
    ("required", True), ("required", False), ({"type": "function", "function": {"name": "get_weather"}}, True)])
def test_forced_tool_calls_parse_and_stream_identically(client, tool_choice, parallel):
    whole = _ask(client, False, tool_choice=tool_choice, parallel_tool_calls=parallel)
    assert _ask(client, True, tool_choice=tool_choice, parallel_tool_calls=parallel) == whole
    content, calls, finish = whole
    assert content is None and finish == "tool_calls" and calls
    if not parallel:
        assert len(calls) == 1
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for name, arguments in calls:
        if isinstance(tool_choice, dict):
            assert name == "get_weather"
        jsonschema.validate(json.loads(arguments), schemas[name])


def test_auto_with_a_parser_and_none_answer_as_content(client):
    for choice in ("auto", "none"):
        assert _ask(client, True, tool_choice=choice, max_tokens=16) == _ask(client, False, tool_choice=choice,
                                                                            max_tokens=16)


def test_a_conversation_with_tool_turns(client):
    messages = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"forecast": "sunny"}'}]
    content, calls, finish = _ask(client, False, messages=messages, tool_choice="required")
    assert calls and finish == "tool_calls"


@pytest.mark.parametrize("kw, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}],
      "tool_choice": "required"}, "tools"),
])
def test_bad_tool_requests_are_400(client, kw, param):
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, False, **kw)
    assert info.value.body["param"] == param
