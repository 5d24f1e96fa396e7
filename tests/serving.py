"""Helpers for tests that drive a server: reach its engine client from the test thread, freeze its core, run
`llmfleet serve` as a real process and read a stream from it."""
from __future__ import annotations

import asyncio
import contextlib
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


def on_app_loop(ctx, coroutine, timeout: float = 30.0):
    """Run `coroutine` on the served app's event loop (where the engine client lives); its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, ctx.engine.loop).result(timeout)


def engine_stats(ctx, timeout: float = 30.0):
    """The engine core's EngineStats, asked for over its socket like /metrics does."""
    return on_app_loop(ctx, ctx.engine.stats(), timeout)


@contextlib.contextmanager
def frozen_core(ctx):
    """Stop the engine-core process (SIGSTOP) for the block: the API server still answers, nothing is stepped."""
    os.kill(ctx.engine.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(ctx.engine.pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(checkpoint, drain_timeout: float = 30, max_model_len: int = 512,
                         stderr=None, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`python -m llmfleet serve` on a free port, once /ready answers 200: (process, base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", str(checkpoint), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "320",
           "--max-model-len", str(max_model_len), "--drain-timeout", str(drain_timeout), "--log-level", "warning", *extra_args]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stderr=stderr)
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


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout: float = 30.0, poll: float = 0.02) -> bool:
    """Polls `condition()` until it holds (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def gone_within(pids: list[int], timeout: float) -> bool:
    """Waits up to `timeout` seconds for every process of `pids` to end; whether they all did."""
    return wait_until(lambda: not any(alive(pid) for pid in pids), timeout, poll=0.05)



class StreamReader(threading.Thread):
    """Reads one streamed completion in the background; `started` is set once its first token arrived."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.started, self.chunks, self.done = threading.Event(), [], False
        self.errors: list[dict] = []  # error events (an envelope sent after the 200 header went out)

    def run(self) -> None:
        body = {"prompt": [5, 6, 7], "max_tokens": self.max_tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    (self.errors if "error" in chunk else self.chunks).append(chunk)
                    self.started.set()

    @property
    def finish_reason(self) -> str | None:
        choices = [c["choices"][0] for c in self.chunks if c["choices"]]
        return choices[-1]["finish_reason"] if choices else None

    @property
    def completion_tokens(self) -> int:
        return self.chunks[-1]["usage"]["completion_tokens"]
