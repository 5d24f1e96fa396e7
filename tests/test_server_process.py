"""`llmfleet serve` runs the engine core in a child process: killing the core under load fails every in-flight
request cleanly (streams end with an error event and [DONE], others get 503) and the server exits 1 saying why;
killing the server (kill -9) takes its core down with it."""
from __future__ import annotations

import os
import signal
import tempfile
import threading

import httpx

try:
    from serving import StreamReader, children, gone_within, start_server_process
except ImportError:
    from tests.serving import StreamReader, children, gone_within, start_server_process


def test_killed_core_fails_in_flight_requests_and_the_server_exits_with_the_cause(tiny_checkpoint):
    log = tempfile.TemporaryFile()
    proc, url = start_server_process(tiny_checkpoint("llama", max_position_embeddings=4096), max_model_len=4096,
                                     stderr=log)
    try:
        streams = [StreamReader(url, max_tokens=4000) for _ in range(3)]
        for stream in streams:
            stream.start()
        answers = []
        plain = threading.Thread(target=lambda: answers.append(httpx.post(
            url + "/v1/completions", json={"prompt": [5, 6], "max_tokens": 4000, "ignore_eos": True}, timeout=60)))
        plain.start()
        assert all(stream.started.wait(30) for stream in streams)
        (core,) = [pid for pid in children(proc.pid) if "spawn_main" in _cmdline(pid)]
        os.kill(core, signal.SIGKILL)
        for stream in streams:
            stream.join(30)
            assert stream.done, "the stream ends with [DONE], never hangs"
            assert stream.errors and stream.errors[-1]["error"]["code"] == "engine_dead"
        plain.join(30)
        assert answers and answers[0].status_code == 503
        assert answers[0].json()["error"]["code"] == "engine_dead"
        assert proc.wait(30) == 1
        assert b"engine core" in _read(log) and b"killed by signal 9" in _read(log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_killed_server_takes_its_engine_core_down(tiny_checkpoint):
    proc, url = start_server_process(tiny_checkpoint("llama"))
    descendants = children(proc.pid)
    assert descendants
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert gone_within(descendants, 15), "no child process outlives the server"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def _read(log) -> bytes:
    log.seek(0)
    return log.read()
