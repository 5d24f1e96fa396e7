"""Structured outputs through the official `openai` client against a real server with a tiny random checkpoint:
the model's text means nothing, but the grammar forces its shape, so every answer must parse and validate."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import jsonschema
import openai
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

MODEL = "tiny"
MESSAGES = [{"role": "user", "content": "Describe the weather as JSON."}]
_INT = {"type": "integer", "minimum": 0, "maximum": 999}
_WORD = {"type": "string", "maxLength": 8}
SCHEMAS = [
    {"type": "object", "properties": {"a": _INT}, "required": ["a"]},
    {"type": "object", "properties": {"name": _WORD, "age": _INT}, "required": ["name", "age"]},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["x"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1,
                                                "maxItems": 3}}, "required": ["tags"]},
    {"type": "object", "properties": {"inner": {"type": "object", "properties": {"v": _INT},
                                                 "required": ["v"]}}, "required": ["inner"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {
        "type": "object", "properties": {"c": {"enum": [1, 2, 3]}}, "required": ["c"]}}, "required": ["b"]}},
     "required": ["a"]},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
     "required": ["code"]},
    {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-f0-9]{4}$"}, "n": _INT},
     "required": ["id", "n"]},
    {"type": "array", "items": _INT, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"points": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"x": _INT, "y": _INT}, "required": ["x", "y"]}}}, "required": ["points"]},
    {"type": "object", "properties": {"kind": {"const": "event"}, "at": _INT}, "required": ["kind", "at"]},
    {"type": "object", "properties": {"value": {"anyOf": [_INT, {"type": "boolean"}]}}, "required": ["value"]},
    {"type": "object", "properties": {"maybe": {"type": ["integer", "null"], "minimum": 0, "maximum": 9}},
     "required": ["maybe"]},
    {"type": "object", "properties": {"a": _INT, "b": _WORD}, "required": ["a"]},
    {"enum": ["yes", "no"]},
    {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}, "required": ["day"]},
    {"type": "object", "properties": {"m": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "maxItems": 2, "items": {"type": "boolean"}}}}, "required": ["m"]},
    {"$defs": {"pt": {"type": "object", "properties": {"x": _INT}, "required": ["x"]}},
     "type": "object", "properties": {"p": {"$ref": "#/$defs/pt"}, "q": {"$ref": "#/$defs/pt"}},
     "required": ["p", "q"]},
]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=256,
                          max_model_len=512, max_num_seqs=32)
    holder = {}
    app = create_app(ServerConfig(served_model_names=(MODEL,)), config, on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, ctx=holder["ctx"])


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client, **kw):
    kw = {"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 200, **kw}
    return client.chat.completions.create(**kw)


def test_twenty_schemas_give_valid_json(client):
    def ask(schema):
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        return _chat(client, response_format=fmt).choices[0]

    with ThreadPoolExecutor(8) as pool:  # concurrent: the constrained rows share batches
        answers = list(pool.map(ask, SCHEMAS))
    for schema, choice in zip(SCHEMAS, answers):
        assert choice.finish_reason == "stop", (schema, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_every_guided_mode(client):
    schema = SCHEMAS[1]
    cases = [
        ({"guided_json": schema}, lambda t: jsonschema.validate(json.loads(t), schema)),
        ({"guided_json": json.dumps(schema)}, lambda t: jsonschema.validate(json.loads(t), schema)),
        ({"guided_regex": r"[a-z]{2,5}-\d{3}"}, lambda t: re.fullmatch(r"[a-z]{2,5}-\d{3}", t) or pytest.fail(t)),
        ({"guided_choice": ["cat", "dog", "bird"]}, lambda t: t in ("cat", "dog", "bird") or pytest.fail(t)),
        ({"guided_grammar": 'root ::= "<" [a-c]+ ">"'}, lambda t: re.fullmatch(r"<[a-c]+>", t) or pytest.fail(t)),
        ({"structured_outputs": {"json": schema}}, lambda t: jsonschema.validate(json.loads(t), schema)),
        ({"structured_outputs": {"regex": "(ab)+c"}}, lambda t: re.fullmatch("(ab)+c", t) or pytest.fail(t)),
        ({"structured_outputs": {"choice": ["on", "off"]}}, lambda t: t in ("on", "off") or pytest.fail(t)),
        ({"structured_outputs": {"grammar": 'root ::= "x" "y"*'}}, lambda t: re.fullmatch("xy*", t) or pytest.fail(t)),
    ]
    def run(i_case):
        i, (body, _) = i_case
        if i % 2 == 0:
            return _chat(client, max_tokens=120, extra_body=body).choices[0].message.content
        return client.completions.create(model=MODEL, prompt="Answer:", temperature=0, max_tokens=120,
                                         extra_body=body).choices[0].text

    with ThreadPoolExecutor(len(cases)) as pool:  # chat and completions alternate
        texts = list(pool.map(run, enumerate(cases)))
    for (_, check), text in zip(cases, texts):
        check(text)


def test_text_format_is_unconstrained(client):
    plain = _chat(client, max_tokens=24, extra_body={"ignore_eos": True}).choices[0].message.content
    text = _chat(client, max_tokens=24, response_format={"type": "text"},
                 extra_body={"ignore_eos": True}).choices[0].message.content
    assert text == plain


def test_n_samples_each_follow_the_grammar(client):
    schema = {"type": "object", "properties": {"w": {"enum": ["a", "b", "c", "d"]}, "k": _INT},
              "required": ["w", "k"]}
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=1.0, n=4, max_tokens=60,
                                         seed=7, response_format={"type": "json_schema", "json_schema": {
                                             "name": "s", "schema": schema}})
    assert len(out.choices) == 4
    for choice in out.choices:
        jsonschema.validate(json.loads(choice.message.content), schema)
    streamed = client.completions.create(model=MODEL, prompt="Pick:", temperature=1.0, n=3, max_tokens=20,
                                         stream=True, extra_body={"guided_choice": ["left", "right", "up"]})
    texts = {}
    for chunk in streamed:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert sorted(texts) == [0, 1, 2] and all(t in ("left", "right", "up") for t in texts.values())


def test_unconstrained_greedy_tokens_unchanged_beside_constrained(client):
    """The bitmask touches only constrained rows: a greedy request gives the same tokens alone and in a batch
    with constrained ones."""
    def plain():
        return client.completions.create(model=MODEL, prompt="one, two, three", temperature=0, max_tokens=40,
                                         extra_body={"ignore_eos": True}).choices[0].text

    alone = plain()
    with ThreadPoolExecutor(6) as pool:
        fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMAS[1]}}
        constrained = [pool.submit(_chat, client, response_format=fmt) for _ in range(4)]
        mixed = [pool.submit(plain) for _ in range(2)]
        assert [f.result() for f in mixed] == [alone, alone]
        for f in constrained:
            jsonschema.validate(json.loads(f.result().choices[0].message.content), SCHEMAS[1])


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "bogus"}}}},
     "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": 3}}},
     "response_format.json_schema"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_regex": "a(b"}, "guided_regex"),
    ({"guided_grammar": "root ::= undefined_rule"}, "guided_grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
    ({"structured_outputs": {"jsn": {}}}, None),
])
def test_bad_constraints_are_400(client, body, param):
    with pytest.raises(openai.BadRequestError) as info:
        _chat(client, extra_body=body)
    assert info.value.status_code == 400
    if param is not None:
        assert info.value.body["param"] == param


def test_tools_without_a_parser_need_a_forced_choice(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as info:
        _chat(client, tools=tools)                    # tool_choice defaults to "auto"
    assert info.value.body["param"] == "tool_choice"


def test_logprobs_of_a_constrained_answer_are_the_models_own(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=10, logprobs=True,
                                         top_logprobs=5, extra_body={"guided_choice": ["yes", "no"]}).choices[0]
    assert out.message.content in ("yes", "no")
    for entry in out.logprobs.content:   # finite: taken before the mask (which sets forbidden logits to -inf)
        assert len(entry.top_logprobs) == 5 and all(t.logprob > -1e9 for t in entry.top_logprobs)
