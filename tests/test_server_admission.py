"""Admission and tokenization under abuse: a huge prompt is tokenized off the event loop (probes keep answering)
and refused untokenized when it cannot fit; every sequence of a request (prompts x n) counts against the waiting
bound; a client that leaves a multi-prompt request, streamed or not, has every one of its sequences aborted."""
from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
from types import SimpleNamespace

import httpx
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.common.tokenizer_pool import TokenizerPool
from llmfleet.server.config import ServerConfig

try:
    from serving import engine_stats, frozen_core, wait_until
except ImportError:
    from tests.serving import engine_stats, frozen_core, wait_until

MAX_WAITING = 64
MAX_LEN = 1024
NUM_BLOCKS = 1024


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32",
                          num_kv_blocks=NUM_BLOCKS, max_model_len=MAX_LEN, max_num_seqs=256)
    holder = {}
    app = create_app(ServerConfig(served_model_names=("tiny",), max_waiting_requests=MAX_WAITING),
                     config, on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield SimpleNamespace(url=url, http=http, ctx=holder["ctx"])


class _GatedTokenizer:
    """Delegates to a real tokenizer; `encode` says it started, then waits for the gate (a tokenizer that takes
    as long as the test wants). Copies share the events, so every worker thread's copy is gated."""

    def __init__(self, inner, entered: threading.Event, gate: threading.Event):
        self.inner, self.entered, self.gate = inner, entered, gate

    def __deepcopy__(self, memo):
        return _GatedTokenizer(copy.deepcopy(self.inner, memo), self.entered, self.gate)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.encode(*args, **kwargs)


@pytest.fixture
def gated(server):
    entered, gate = threading.Event(), threading.Event()
    real = server.ctx.tokenizers
    server.ctx.tokenizers = TokenizerPool(_GatedTokenizer(server.ctx.tokenizer, entered, gate))
    yield SimpleNamespace(entered=entered, gate=gate)
    gate.set()
    server.ctx.tokenizers.shutdown()
    server.ctx.tokenizers = real


def _stats(server):
    return engine_stats(server.ctx)


def _wait_for(condition) -> bool:
    return wait_until(condition, timeout=60.0, poll=0.005)


def _idle(server) -> bool:
    stats = _stats(server)
    return (stats.num_running == stats.num_waiting == 0 and stats.num_free_blocks == NUM_BLOCKS
            and server.ctx.engine.num_in_flight == 0 and server.ctx.num_waiting_sequences == 0)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_health_answers_while_a_huge_prompt_is_tokenized(server, gated, path):
    text = "the quick brown fox " * (server.ctx.max_prompt_chars // 20 - 50)
    body = {"prompt": text} if path == "/v1/completions" else {"messages": [{"role": "user", "content": text}]}
    big = {}
    worker = threading.Thread(target=lambda: big.update(r=httpx.post(server.url + path, json=body, timeout=60)))
    worker.start()
    assert gated.entered.wait(60)          # the big prompt is being tokenized now, and stays so until the gate opens
    assert server.http.get("/health").json() == {"status": "ok"}
    assert server.http.get("/v1/models").status_code == 200
    assert "r" not in big                  # the probes were answered before the big request was
    gated.gate.set()
    worker.join(60)
    assert big["r"].status_code == 400 and big["r"].json()["error"]["code"] == "context_length_exceeded"


def test_text_that_cannot_fit_is_refused_before_tokenizing(server, gated):
    too_long = "x" * (server.ctx.max_prompt_chars + 1)
    r = server.http.post("/v1/completions", json={"prompt": ["fine", too_long]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert r.json()["error"]["code"] == "context_length_exceeded" and "characters" in r.json()["error"]["message"]
    r = server.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": too_long}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert not gated.entered.is_set()


def test_prompts_times_n_over_the_bound_is_a_400(server):
    r = server.http.post("/v1/completions", json={"prompt": ["a"] * 9, "n": 8, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert "9 x 8" in r.json()["error"]["message"]
    r = server.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "n": 65})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_every_sequence_counts_against_the_waiting_bound(server):
    body = {"prompt": [[5, 6], [7, 8], [9, 10], [11, 12]], "n": 8, "max_tokens": 1}

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            with frozen_core(server.ctx):  # the core admits nothing until it is thawed
                first = [asyncio.create_task(http.post("/v1/completions", json=body)) for _ in range(2)]
                while server.ctx.num_waiting_sequences < 64:  # both admitted: 2 x 4 prompts x 8 samples
                    await asyncio.sleep(0.005)
                refused = await http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 1})
            return refused, await asyncio.gather(*first)

    refused, served = asyncio.run(run())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert [len(r.json()["choices"]) for r in served] == [32, 32]
    assert _wait_for(lambda: _idle(server))


def _send(server, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection((server.ctx.config.host, int(server.url.rsplit(":", 1)[1])))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_aborts_every_sequence(server, stream):
    body = {"prompt": [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], "n": 8, "max_tokens": 900, "ignore_eos": True,
            "stream": stream}
    sock = _send(server, body)
    try:
        if stream:
            received = b""
            while received.count(b"data: ") < 3:
                received += sock.recv(65536)
        assert _wait_for(lambda: _stats(server).num_running == 32)
    finally:
        sock.close()
    assert _wait_for(lambda: _idle(server))
    assert server.http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2}).status_code == 200
