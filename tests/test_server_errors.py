"""Every failure answers in OpenAI's error envelope with the right status, and never disturbs the server:
validation (400), context length (400), unknown model (404), body size (413), queue bound (429 + Retry-After),
API key (401), unknown route / method; plus fuzzed request bodies that must never produce a 5xx."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

try:
    from serving import frozen_core
except ImportError:
    from tests.serving import frozen_core

KEY = "test-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_WAITING = 128  # sequences: a request of n = 128 just fits; the 429 test sends requests of n = 64
MAX_BODY = 8192
MAX_LEN = 256


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=512,
                          max_model_len=MAX_LEN, max_num_seqs=256)
    holder = {}
    settings_ = ServerConfig(served_model_names=("tiny",), api_key=KEY, max_waiting_requests=MAX_WAITING,
                             max_body_bytes=MAX_BODY)
    app = create_app(settings_, config, on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            yield SimpleNamespace(url=url, http=http, ctx=holder["ctx"])


def _assert_envelope(response: httpx.Response, status: int, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["code"]
    assert response.headers["x-request-id"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def _still_serving(server) -> None:
    assert server.http.get("/health").json() == {"status": "ok"}
    r = server.http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def _post(server, path: str, body: dict) -> httpx.Response:
    """json.dumps escapes lone surrogates as \\udXXX, as a JSON client may send them (httpx's own encoder refuses)."""
    return server.http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


COMPLETION_400 = [
    ({}, "prompt"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_k": -5}, "top_k"),
    ({"prompt": "x", "top_k": 1 << 70}, "top_k"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 1000}, "n"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [-1, 5]}, "prompt"),
    ({"prompt": [5, 100000]}, "prompt"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
    ({"prompt": "x", "seed": 1 << 70}, "seed"),
    ({"prompt": "x", "seed": 1 << 63}, "seed"),
    ({"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"five": 1}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"100000": 1}}, "logit_bias"),
    ({"prompt": "x", "echo": True, "suffix": "y"}, "suffix"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "temperature": "0.5"}, "temperature"),
    ({"prompt": "x", "n": 2.0}, "n"),
    ({"prompt": "x", "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"prompt": "x", "best_of": 1, "n": 2}, "best_of"),
    ({"prompt": "x", "best_of": 3, "stream": True}, "best_of"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "max_token": 5}, "max_token"),
    ({"prompt": "x", "stream": True, "stream_options": {"include_usag": True}}, "stream_options.include_usag"),
    ({"prompt": "x", "stream": "sometimes"}, "stream"),
    ({"prompt": "lone \ud800 surrogate"}, "prompt"),
]

CHAT_400 = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools.0.function"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -1}, "max_tokens"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": "hi", "nmae": "x"}]}, "messages.0.nmae"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_token": 3}, "max_completion_token"),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": "hi"}], "continue_final_message": True},
     "continue_final_message"),
    ({"messages": [{"role": "user", "content": "hi"}], "continue_final_message": True,
      "add_generation_prompt": False}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"messages": []}},
     "chat_template_kwargs"),
    ({"messages": [{"role": "user", "content": "hi"}], "chat_template": "{{ raise_exception('no') }}"}, "messages"),
    ({"messages": [{"role": "user", "content": "\udfff"}]}, "messages.0.content"),
]


# Every string field that JSON can fill with a lone surrogate: a 400 naming it, never a 500.
SURROGATES = [
    ("/v1/completions", {"prompt": "x", "model": "\ud800"}, "model"),
    ("/v1/completions", {"prompt": "x", "user": "a\udc00"}, "user"),
    ("/v1/completions", {"prompt": "x", "stop": "\ud800"}, "stop"),
    ("/v1/completions", {"prompt": "x", "stop": ["ok", "\ud800"]}, "stop.1"),
    ("/v1/completions", {"prompt": ["ok", "\ud800"]}, "prompt.1"),
    ("/v1/completions", {"prompt": "x", "suffix": "\ud800"}, "suffix"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"\ud800": 1.0}}, "logit_bias"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "model": "\udfff"}, "model"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi", "name": "\ud800"}]},
     "messages.0.name"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
     "messages.0.content.0.text"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "\ud800"}},
     "response_format.type"),
]


@pytest.mark.parametrize("path, body, param", SURROGATES)
def test_lone_surrogates_are_a_400_naming_the_field(server, path, body, param):
    _assert_envelope(_post(server, path, {"max_tokens": 2, **body}), 400, param, "invalid_value")


@pytest.mark.parametrize("body", [b"[" * 4000 + b"]" * 4000, b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                                  b'{"prompt": "x",'], ids=["nested-list", "nested-prompt", "truncated"])
def test_unparsable_bodies_are_a_400_with_a_code(server, body):
    r = server.http.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    _assert_envelope(r, 400, None, "invalid_json")


class _BrokenMetrics:
    def render(self, stats):
        raise RuntimeError("a bug")


def _http(sock, path: str) -> bytes:
    """One GET on an open connection; the whole response (headers and body, by Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_unexpected_error_is_a_500_with_request_id_and_the_connection_lives_on(server):
    metrics, server.ctx.metrics = server.ctx.metrics, _BrokenMetrics()
    try:
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
            failed = _http(sock, "/metrics")
            assert failed.startswith(b"HTTP/1.1 500") and b"x-request-id: " in failed
            assert json.loads(failed.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "internal_error"
            assert _http(sock, "/health").startswith(b"HTTP/1.1 200")  # same connection: not reset
    finally:
        server.ctx.metrics = metrics


@pytest.mark.parametrize("body, param", COMPLETION_400)
def test_completion_validation_errors(server, body, param):
    _assert_envelope(_post(server, "/v1/completions", {"max_tokens": 2, **body}), 400, param)


@pytest.mark.parametrize("body, param", CHAT_400)
def test_chat_validation_errors(server, body, param):
    _assert_envelope(_post(server, "/v1/chat/completions", {"max_tokens": 2, **body}), 400, param)


@pytest.mark.parametrize("seed", [(1 << 63) - 1, -(1 << 63)])
def test_extreme_seeds_with_many_samples_are_served(server, seed):
    r = _post(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "seed": seed, "n": 128})
    assert r.status_code == 200 and len(r.json()["choices"]) == 128


def test_context_length_errors_say_how_long(server):
    error = _assert_envelope(server.http.post("/v1/completions", json={"prompt": [5] * 300}), 400, "prompt",
                             "context_length_exceeded")
    assert "300" in error["message"] and str(MAX_LEN) in error["message"]
    error = _assert_envelope(server.http.post("/v1/completions", json={"prompt": [5] * 200, "max_tokens": 100}),
                             400, "prompt", "context_length_exceeded")
    assert "300 tokens" in error["message"] and "200 in the prompt" in error["message"]
    messages = [{"role": "user", "content": "hello " * 300}]
    _assert_envelope(server.http.post("/v1/chat/completions", json={"messages": messages}), 400, "messages",
                     "context_length_exceeded")
    _still_serving(server)


def test_unknown_model_route_and_method(server):
    _assert_envelope(server.http.post("/v1/completions", json={"prompt": "x", "model": "gpt-9"}), 404, "model",
                     "model_not_found")
    _assert_envelope(server.http.get("/v1/nothing"), 404, code="not_found")
    _assert_envelope(server.http.get("/v1/completions"), 405)
    _assert_envelope(server.http.post("/v1/completions", content=b"{not json",
                                      headers={"content-type": "application/json"}), 400)
    _assert_envelope(server.http.post("/v1/completions", json=[1, 2]), 400)
    _still_serving(server)


def test_body_over_the_limit_gets_413(server):
    big = {"prompt": "x" * (MAX_BODY + 10), "max_tokens": 2}
    _assert_envelope(server.http.post("/v1/completions", json=big), 413, code="request_too_large")

    def chunks():  # no Content-Length: the limit is enforced while the body is read
        yield b'{"prompt": "'
        for _ in range(MAX_BODY // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    _assert_envelope(server.http.post("/v1/completions", content=chunks(),
                                      headers={"content-type": "application/json"}), 413, code="request_too_large")
    _still_serving(server)


def test_api_key_is_required_everywhere_but_the_probes(server):
    _assert_envelope(httpx.post(server.url + "/v1/completions", json={"prompt": "x"}), 401, code="invalid_api_key")
    _assert_envelope(httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
        _assert_envelope(httpx.get(server.url + path), 401, code="invalid_api_key")
        assert server.http.get(path).status_code == 200, path
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ready").status_code == 200


def test_probes_and_metrics_answer_head(server):
    for path in ("/health", "/ready", "/metrics"):
        r = server.http.head(path)
        assert r.status_code == 200 and r.content == b"", path
    paths = server.http.get("/openapi.json").json()["paths"]
    assert [set(paths[p]) for p in ("/health", "/ready", "/metrics")] == [{"get"}] * 3  # HEAD: not listed twice


def test_metrics_public_opens_metrics_only(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=64,
                          max_model_len=MAX_LEN)
    app = create_app(ServerConfig(api_key=KEY, metrics_public=True), config)
    with BackgroundServer(app) as url:
        assert httpx.get(url + "/metrics").status_code == 200
        assert httpx.head(url + "/metrics").status_code == 200
        for path in ("/docs", "/openapi.json", "/v1/models"):
            _assert_envelope(httpx.get(url + path), 401, code="invalid_api_key")


def test_request_id_is_echoed(server):
    r = server.http.get("/v1/models", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(server.http.get("/v1/models").headers["x-request-id"]) == 32


def test_waiting_queue_bound_gives_429_with_retry_after(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http:
            async def one(i):
                await asyncio.sleep(0.05 * i)  # arrive in order, all while the core is frozen
                return await http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2, "n": 64})
            with frozen_core(server.ctx):  # the core admits nothing: every admitted request waits for its token
                tasks = [asyncio.create_task(one(i)) for i in range(5)]
                await asyncio.wait(tasks[2:])  # the refused ones are answered while the core is frozen
                assert not any(t.done() for t in tasks[:2])
            return await asyncio.gather(*tasks)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 2 + [429] * 3  # sequences count, not requests
    for r in responses[2:]:
        _assert_envelope(r, 429, code="queue_full")
        assert r.headers["retry-after"] == "1"
    _still_serving(server)


_values = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False),
                    st.text(max_size=12), st.lists(st.integers(-5, 600), max_size=6),
                    st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.text(max_size=5), st.integers()))
_small_tokens = st.one_of(st.integers(-3, 6), st.text(max_size=3), st.floats(-2, 6), st.booleans())
_fields = ["model", "prompt", "n", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
           "ignore_eos", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
           "stream", "stream_options", "user", "priority", "echo", "best_of", "skip_special_tokens"]
_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "bot"]),
                                            "content": st.one_of(st.text(max_size=20), st.none(), st.integers())}),
                     max_size=3)
_bodies = st.tuples(st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
                    st.dictionaries(st.sampled_from(_fields), _values, max_size=6),
                    st.sampled_from(["max_tokens", "max_completion_tokens"]), _small_tokens,
                    st.one_of(st.none(), _messages), st.integers(1, 3))


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_bodies)
def test_fuzzed_bodies_never_get_a_5xx(server, case):
    path, body, cap_field, cap, messages, n = case
    body = {**body, "max_tokens": cap if isinstance(cap, int) and not isinstance(cap, bool) else 2, cap_field: cap}
    if isinstance(body.get("n"), int) and not isinstance(body["n"], bool):
        body["n"] = n  # keep accepted requests small: the fuzz is about parsing, not throughput
    if messages is not None:
        body["messages"] = messages
    # Python's json writes inf as the non-standard `Infinity`, which the server must refuse with a 4xx too.
    r = server.http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        _assert_envelope(r, r.status_code)


def test_fuzzed_json_documents_never_get_a_5xx(server):
    @settings(max_examples=30, deadline=None)
    @given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=8))
    def check(document):
        for path in ("/v1/completions", "/v1/chat/completions"):
            r = server.http.post(path, json=document)
            assert r.status_code == 400 or (r.status_code == 200 and isinstance(document, dict)), r.text

    check()
    _still_serving(server)
