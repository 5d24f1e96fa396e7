"""Tenancy mounted on a real `llmfleet serve` app over a tiny checkpoint: the official client with a virtual key,
the cost header from the real usage, streams with the usage chunk forced upstream and stripped, the probes open,
the flags, and every request's spend in the database after shutdown (the batch is written only then)."""
from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import httpx
import openai
import pytest

from llmfleet.entrypoints.cli import build_parser
from llmfleet.entrypoints.serve import build_configs
from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig
from llmfleet.tenancy import TenancyConfig

MASTER = "sk-master-serve-test"
PRICES = {"tiny": {"input": 100.0, "output": 1000.0}}


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve-tenancy") / "keys.db"
    # flushes only at shutdown, so the last test sees what the shutdown flush wrote
    tenancy = TenancyConfig(master_key=MASTER, database_url=f"sqlite:///{db}", prices=PRICES,
                            spend_flush_interval_s=3600.0, spend_batch_size=10_000)
    engine = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=128,
                          max_model_len=128)
    background = BackgroundServer(create_app(ServerConfig(served_model_names=("tiny",), tenancy=tenancy), engine))
    url = background.start()
    key = httpx.post(url + "/key/generate", json={"models": ["tiny"]},
                     headers={"authorization": f"Bearer {MASTER}"}).json()["key"]
    state = SimpleNamespace(url=url, key=key, db=db, background=background, requests=0, stopped=False)
    yield state
    if not state.stopped:
        background.stop()


def _client(server, key=None):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.key, max_retries=0, timeout=60)


def test_probes_open_and_api_closed(server):
    assert httpx.get(server.url + "/health").status_code == 200
    answer = httpx.get(server.url + "/v1/models")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert [m.id for m in _client(server).models.list().data] == ["tiny"]


def test_completion_cost_header_from_real_usage(server):
    raw = _client(server).completions.with_raw_response.create(model="tiny", prompt="Hello", max_tokens=4,
                                                               temperature=0, extra_body={"ignore_eos": True})
    server.requests += 1
    out = raw.parse()
    expected = (out.usage.prompt_tokens * 100.0 + out.usage.completion_tokens * 1000.0) / 1e6
    assert out.usage.completion_tokens == 4
    assert float(raw.headers["x-llmfleet-cost"]) == pytest.approx(expected, abs=1e-8)


def test_stream_without_usage_asked_gets_none(server):
    chunks = list(_client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, temperature=0,
        extra_body={"ignore_eos": True}))
    server.requests += 1
    assert chunks and all(getattr(c, "usage", None) is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_stream_with_usage_asked_keeps_it(server):
    chunks = list(_client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, temperature=0,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    server.requests += 1
    assert chunks[-1].usage.completion_tokens == 3 and not chunks[-1].choices


def test_responses_are_metered_whole_and_streamed(server):
    client = _client(server)
    raw = client.responses.with_raw_response.create(model="tiny", input="Hello", max_output_tokens=3,
                                                    temperature=0, extra_body={"ignore_eos": True})
    server.requests += 1
    out = raw.parse()
    expected = (out.usage.input_tokens * 100.0 + out.usage.output_tokens * 1000.0) / 1e6
    assert out.usage.output_tokens == 3
    assert float(raw.headers["x-llmfleet-cost"]) == pytest.approx(expected, abs=1e-8)
    with httpx.stream("POST", server.url + "/v1/responses", headers={"authorization": f"Bearer {server.key}"},
                      json={"model": "tiny", "input": "Hello", "max_output_tokens": 3, "stream": True,
                            "ignore_eos": True}, timeout=60) as answer:
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    server.requests += 1
    usage = events[-1]["response"]["usage"]
    assert events[-1]["type"] == "response.incomplete" and usage["output_tokens"] == 3
    assert usage["cost"] == pytest.approx((usage["input_tokens"] * 100.0 + 3 * 1000.0) / 1e6, abs=1e-8)


def test_wrong_model_and_wrong_key(server):
    with pytest.raises(openai.PermissionDeniedError):
        _client(server).completions.create(model="other", prompt="x", max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        _client(server, key="sk-nope").completions.create(model="tiny", prompt="x", max_tokens=1)


def test_serve_flags_build_the_tenancy_config(tmp_path, monkeypatch):
    for name in ("LLMFLEET_MASTER_KEY", "LLMFLEET_DATABASE_URL", "LLMFLEET_REDIS_URL", "LLMFLEET_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["serve", "--model", str(tmp_path), "--master-key", MASTER,
                                      "--database-url", "postgresql://u@h/db", "--redis-url", "redis://h:1/0"])
    tenancy = build_configs(args)[0].tenancy
    assert (tenancy.master_key, tenancy.database_url, tenancy.redis_url) == (MASTER, "postgresql://u@h/db",
                                                                             "redis://h:1/0")
    monkeypatch.setenv("LLMFLEET_MASTER_KEY", MASTER)
    assert build_configs(build_parser().parse_args(["serve", "--model", str(tmp_path)]))[0].tenancy is not None
    monkeypatch.delenv("LLMFLEET_MASTER_KEY")
    with pytest.raises(ValueError, match="master_key"):
        build_configs(build_parser().parse_args(["serve", "--model", str(tmp_path), "--redis-url", "redis://h"]))
    with pytest.raises(ValueError, match="api_key"):
        ServerConfig(api_key="k", tenancy=TenancyConfig(master_key=MASTER))


def test_spend_written_at_shutdown(server):
    server.background.stop()
    server.stopped = True
    with sqlite3.connect(server.db) as db:
        rows = db.execute("select model, completion_tokens, cost, status from tenancy_spend").fetchall()
        spend = db.execute("select spend from tenancy_keys").fetchone()[0]
    assert len(rows) == server.requests == 5
    assert sorted(r[1] for r in rows) == [3, 3, 3, 3, 4] and all(r[0] == "tiny" and r[3] == 200 for r in rows)
    assert spend == pytest.approx(sum(r[2] for r in rows))


def test_sigterm_drain_writes_every_request_spend(tiny_checkpoint, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from tests.services import free_port

    db, port = tmp_path / "keys.db", free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", str(tiny_checkpoint("llama")), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "128",
           "--max-model-len", "256", "--log-level", "warning", "--master-key", MASTER,
           "--database-url", f"sqlite:///{db}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFLEET_")}
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env)
    try:
        deadline = time.monotonic() + 120
        while not _ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        key = httpx.post(url + "/key/generate", json={}, headers={"authorization": f"Bearer {MASTER}"}).json()["key"]
        auth = {"authorization": f"Bearer {key}"}
        body = {"model": "tiny", "prompt": "x", "max_tokens": 4, "ignore_eos": True}
        for _ in range(3):
            assert httpx.post(url + "/v1/completions", json=body, headers=auth, timeout=60).status_code == 200
        started, done = threading.Event(), []

        def stream():
            with httpx.stream("POST", url + "/v1/completions", json={**body, "max_tokens": 200, "stream": True},
                              headers=auth, timeout=60) as answer:
                for line in answer.iter_lines():
                    started.set()
                    done.append(line)

        thread = threading.Thread(target=stream)
        thread.start()
        assert started.wait(60)  # admitted and streaming: the drain must let it finish and book it
        proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(db) as conn:
        tokens = sorted(r[0] for r in conn.execute("select completion_tokens from tenancy_spend"))
    assert "data: [DONE]" in done
    assert tokens == [4, 4, 4, 200]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
