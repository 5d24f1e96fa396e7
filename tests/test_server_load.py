"""Load and disconnects: 200 concurrent streaming clients all complete and every KV block comes back; a client
killed mid-stream (or one that gives up on a non-streamed answer) has its request aborted within a second."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

try:
    from serving import engine_stats
except ImportError:
    from tests.serving import engine_stats

NUM_BLOCKS = 640

# A client in its own process: sends a request (streamed or not), says so once it is under way (for a stream: once
# tokens flow), then waits to be killed.
_CLIENT = """
import json, socket, sys
host, port, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "stream"
body = json.dumps({"prompt": [5, 6, 7, 8], "max_tokens": 1000, "ignore_eos": True, "stream": stream}).encode()
sock = socket.create_connection((host, port))
sock.sendall(b"POST /v1/completions HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
             b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
received = b""
while stream and received.count(b"data: ") < 3:
    received += sock.recv(65536)
print("under way", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32",
                          num_kv_blocks=NUM_BLOCKS, max_model_len=1024, max_num_seqs=256)
    holder = {}
    app = create_app(ServerConfig(served_model_names=("tiny",)), config,
                     on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, ctx=holder["ctx"])


def _stats(server):
    return engine_stats(server.ctx)


def _aborts(server) -> float:
    labels = {"model_name": "tiny", "finished_reason": "abort"}
    return server.ctx.metrics.registry.get_sample_value("vllm:request_success_total", labels) or 0.0


def _wait_idle(server, timeout: float) -> tuple[object, float]:
    """(stats once no request runs or waits, seconds it took)."""
    start = time.monotonic()
    while True:
        stats = _stats(server)
        if stats.num_running == stats.num_waiting == 0 or time.monotonic() - start > timeout:
            return stats, time.monotonic() - start
        time.sleep(0.01)


def test_200_concurrent_streams_complete_and_return_every_block(server):
    before = _stats(server).num_free_blocks

    async def one(http: httpx.AsyncClient, i: int) -> tuple[int, bool]:
        body = {"prompt": [5 + i % 50, 6, 7], "max_tokens": 3 + i % 3, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        usage, done = None, False
        async with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and json.loads(line[6:]).get("usage"):
                    usage = json.loads(line[6:])["usage"]
        return usage["completion_tokens"], done

    async def run():
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as http:
            return await asyncio.gather(*(one(http, i) for i in range(200)))

    results = asyncio.run(run())
    assert results == [(3 + i % 3, True) for i in range(200)]
    stats, _ = _wait_idle(server, 5)
    assert stats.num_free_blocks == before == NUM_BLOCKS


@pytest.mark.parametrize("mode", ["stream", "whole"])
def test_killed_client_is_aborted_within_a_second(server, mode):
    """1000 tokens take seconds even on a fast machine: the request is running when its client dies."""
    aborts = _aborts(server)
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, "127.0.0.1", server.url.rsplit(":", 1)[1], mode],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "under way"
        deadline = time.monotonic() + 30
        while (busy := _stats(server)).num_running == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert busy.num_running == 1 and busy.num_free_blocks < NUM_BLOCKS
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    stats, elapsed = _wait_idle(server, 5)
    assert stats.num_running == 0 and stats.num_free_blocks == NUM_BLOCKS and elapsed < 1.0
    assert _aborts(server) == aborts + 1
