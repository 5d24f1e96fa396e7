"""/v1/responses through the official `openai` client against a real server: the answer equals the chat answer
of the same conversation (greedy), streams equal whole answers, stored responses continue conversations, JSON
schemas and forced tool calls hold, logprobs come when included, and every unsupported or bad field is a 4xx."""
from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
           "required": ["city", "days"]}
TOOL = {"type": "function", "name": "get_weather", "description": "Forecast for a city", "parameters": WEATHER}
CHAT_TOOL = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("qwen2")), device="cpu", dtype="float32", num_kv_blocks=128,
                          max_model_len=512)
    app = create_app(ServerConfig(served_model_names=("tiny",), tool_call_parser="hermes", max_stored_responses=4),
                     config)
    with BackgroundServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client, messages, **kw) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="tiny", messages=messages, temperature=0, **kw)


def _streamed(client, **kw) -> tuple[list, dict]:
    events = list(client.responses.create(model="tiny", temperature=0, stream=True, **kw))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events, events[-1].response


def test_answer_equals_the_chat_answer_and_its_usage(client):
    resp = client.responses.create(model="tiny", input="Tell me about Paris", instructions="Be brief.",
                                   temperature=0, max_output_tokens=12)
    chat = _chat(client, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about "
                                                                                                   "Paris"}],
                 max_completion_tokens=12)
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.model == "tiny"
    assert resp.output_text == chat.choices[0].message.content
    assert resp.usage.input_tokens == chat.usage.prompt_tokens
    assert resp.usage.output_tokens == chat.usage.completion_tokens
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    if chat.choices[0].finish_reason == "length":
        assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    else:
        assert resp.status == "completed"
    assert resp.instructions == "Be brief." and resp.max_output_tokens == 12


def test_stream_events_equal_the_whole_answer(client):
    kw = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Count to five"}]}],
          "max_output_tokens": 16}
    whole = client.responses.create(model="tiny", temperature=0, **kw)
    events, final = _streamed(client, **kw)
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed" if whole.status == "completed" else "response.incomplete"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == final.output_text
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.id == final.output[0].id and final.usage.output_tokens == whole.usage.output_tokens


def test_previous_response_id_continues_the_conversation(client, server):
    first = client.responses.create(model="tiny", input="My name is Ada.", temperature=0, max_output_tokens=8)
    second = client.responses.create(model="tiny", input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=8)
    chat = _chat(client, [{"role": "user", "content": "My name is Ada."},
                          {"role": "assistant", "content": first.output_text},
                          {"role": "user", "content": "What is my name?"}], max_completion_tokens=8)
    assert second.output_text == chat.choices[0].message.content
    assert second.usage.input_tokens == chat.usage.prompt_tokens
    assert second.previous_response_id == first.id
    assert client.responses.retrieve(second.id).output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    unstored = client.responses.create(model="tiny", input="hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="tiny", input="and?", previous_response_id=unstored.id, max_output_tokens=2)
    assert err.value.body["param"] == "previous_response_id"


def test_the_store_keeps_only_the_most_recent(client):
    ids = [client.responses.create(model="tiny", input=f"n{i}", max_output_tokens=1).id for i in range(5)]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[0])
    assert client.responses.retrieve(ids[-1]).id == ids[-1]


def test_json_schema_format_holds(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"],
              "additionalProperties": False}
    resp = client.responses.create(model="tiny", input="A city as JSON", temperature=0, max_output_tokens=60,
                                   text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                                                    "strict": True}})
    jsonschema.validate(json.loads(resp.output_text), schema)
    assert resp.text.format.type == "json_schema"


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_call_then_its_output(client, stream):
    kw = {"input": "Weather in Paris?", "tools": [TOOL], "tool_choice": "required", "max_output_tokens": 120,
          "parallel_tool_calls": False}
    resp = _streamed(client, **kw)[1] if stream else client.responses.create(model="tiny", temperature=0, **kw)
    calls = [item for item in resp.output if item.type == "function_call"]
    assert len(calls) == 1 and all(c.name == "get_weather" and c.call_id.startswith("call_") for c in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), WEATHER)
    chat = _chat(client, [{"role": "user", "content": "Weather in Paris?"}], tools=[CHAT_TOOL],
                 tool_choice="required", parallel_tool_calls=False, max_completion_tokens=120)
    assert [(c.name, c.arguments) for c in calls] == [(c.function.name, c.function.arguments)
                                                      for c in chat.choices[0].message.tool_calls]
    follow = client.responses.create(model="tiny", temperature=0, max_output_tokens=8, tools=[TOOL], input=[
        {"role": "user", "content": "Weather in Paris?"}, *[c.model_dump(exclude_none=True) for c in calls],
        *[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]],
        tool_choice="none")
    assert follow.status in ("completed", "incomplete") and follow.output[0].type == "message"


def test_logprobs_when_included(client):
    resp = client.responses.create(model="tiny", input="Hello", temperature=0, max_output_tokens=5,
                                   include=["message.output_text.logprobs"], top_logprobs=2)
    part = resp.output[0].content[0]
    assert len(part.logprobs) == resp.usage.output_tokens
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in part.logprobs)
    events, final = _streamed(client, input="Hello", max_output_tokens=5, include=["message.output_text.logprobs"])
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert [lp.token for lp in streamed] == [lp.token for lp in part.logprobs]


@pytest.mark.parametrize("body, status, param", [
    ({"input": "x", "max_output_token": 5}, 400, "max_output_token"),
    ({"input": "x", "background": True}, 400, "background"),
    ({"input": "x", "truncation": "auto"}, 400, "truncation"),
    ({"input": "x", "reasoning": {"effort": "high"}}, 400, "reasoning"),
    ({"input": "x", "include": ["file_search_call.results"]}, 400, "include.0"),
    ({"input": "x", "top_logprobs": 2}, 400, "top_logprobs"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}, 400,
     "input.0.content.0"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, 400, "input.0.call_id"),
    ({"input": []}, 400, "input"),
    ({"input": "x", "max_output_tokens": 100000}, 400, "input"),    # context_length_exceeded
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, 400, "text.format"),
    ({"input": "x", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    ({"input": "x", "model": "other"}, 404, "model"),
])
def test_bad_requests_name_their_field(server, body, status, param):
    answer = httpx.post(server + "/v1/responses", json={"model": "tiny", **body}, timeout=60)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
