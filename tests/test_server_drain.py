"""`llmfleet serve` as a real process: SIGTERM drains (ready turns false, new requests get 503, the in-flight
stream completes) and the process exits 0; past the drain timeout, in-flight streams end as "abort"."""
from __future__ import annotations

import signal
import time

import httpx

try:
    from serving import StreamReader as _Stream, children, gone_within, start_server_process
except ImportError:
    from tests.serving import StreamReader as _Stream, children, gone_within, start_server_process


def test_sigterm_drains_in_flight_requests_then_exits_zero(tiny_checkpoint):
    proc, url = start_server_process(tiny_checkpoint("llama"), drain_timeout=60, max_model_len=512)
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
        core = children(proc.pid)
        assert core, "the engine core runs in a child process"
        stream.join(60)
        assert stream.done and stream.finish_reason == "length"
        assert stream.completion_tokens == 300
        assert proc.wait(30) == 0
        assert gone_within(core, 10)  # the core (and multiprocessing's helper) end with the server
    finally:
        if proc.poll() is None:
            proc.kill()


def test_drain_timeout_aborts_what_is_left_and_still_exits_zero(tiny_checkpoint):
    # 4000 tokens take seconds even on a fast machine: the stream is still running when the 0.2 s are up.
    checkpoint = tiny_checkpoint("llama", max_position_embeddings=4096)
    proc, url = start_server_process(checkpoint, drain_timeout=0.2, max_model_len=4096)
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
