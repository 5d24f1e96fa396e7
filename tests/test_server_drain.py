"""`llmfleet serve` as a real process: SIGTERM drains (ready turns false, new requests get 503, the in-flight
stream completes) and the process exits 0; past the drain timeout, in-flight streams end as "abort"."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(checkpoint, drain_timeout: float, max_model_len: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llmfleet.entrypoints.cli", "serve", "--model", str(checkpoint), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "320",
           "--max-model-len", str(max_model_len), "--drain-timeout", str(drain_timeout), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited during startup"
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the server did not become ready")


class _Stream(threading.Thread):
    """Reads one streamed completion in the background; `started` is set once its first token arrived."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.started, self.chunks, self.done = threading.Event(), [], False

    def run(self) -> None:
        body = {"prompt": [5, 6, 7], "max_tokens": self.max_tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    self.chunks.append(json.loads(line[6:]))
                    self.started.set()

    @property
    def finish_reason(self) -> str | None:
        choices = [c["choices"][0] for c in self.chunks if c["choices"]]
        return choices[-1]["finish_reason"] if choices else None

    @property
    def completion_tokens(self) -> int:
        return self.chunks[-1]["usage"]["completion_tokens"]


def test_sigterm_drains_in_flight_requests_then_exits_zero(tiny_checkpoint):
    proc, url = _start(tiny_checkpoint("llama"), drain_timeout=60, max_model_len=512)
    try:
        stream = _Stream(url, max_tokens=300)
        stream.start()
        assert stream.started.wait(30)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(url + "/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = httpx.get(url + "/ready")
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        refused = httpx.post(url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "draining"
        assert not stream.done  # still streaming while the server refuses new work
        stream.join(60)
        assert stream.done and stream.finish_reason == "length"
        assert stream.completion_tokens == 300
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_drain_timeout_aborts_what_is_left_and_still_exits_zero(tiny_checkpoint):
    # 4000 tokens take seconds even on a fast machine: the stream is still running when the 0.2 s are up.
    checkpoint = tiny_checkpoint("llama", max_position_embeddings=4096)
    proc, url = _start(checkpoint, drain_timeout=0.2, max_model_len=4096)
    try:
        stream = _Stream(url, max_tokens=4000)
        stream.start()
        assert stream.started.wait(30)
        proc.send_signal(signal.SIGTERM)
        stream.join(30)
        assert stream.done and stream.finish_reason == "abort"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
