"""Tenancy mounted on a real `llmfleet gateway` process over two real `llmfleet serve` replicas of a tiny model:
keys, the key's model list on /v1/models, the cost header on JSON answers and the cost in a stream's usage chunk
(the chunk asked upstream and removed for clients that did not ask), a per-model rpm limit and a budget in front of
the proxy, and every request's spend in the database once the gateway has stopped."""
from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import httpx
import openai
import pytest

try:
    from fleet_procs import gateway_proc, replica
    from tenancy_app import wait_for_minute_room
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import gateway_proc, replica
    from tests.tenancy_app import wait_for_minute_room

MASTER = "sk-master-gateway-test"
PRICE_IN, PRICE_OUT = 100.0, 1000.0  # dollars per 1M tokens of model "tiny"


def _cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * PRICE_IN + completion_tokens * PRICE_OUT) / 1e6


@pytest.fixture(scope="module")
def gw(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway-tenancy")
    prices = folder / "prices.json"
    prices.write_text(json.dumps({"tiny": {"input": PRICE_IN, "output": PRICE_OUT}}))
    db = folder / "keys.db"
    replicas = [replica(tiny_checkpoint("llama"), kv_events=False).start() for _ in range(2)]
    gateway = None
    try:
        for proc in replicas:
            proc.wait_ready(240)
        gateway = gateway_proc([p.url for p in replicas], "--master-key", MASTER, "--database-url",
                               f"sqlite:///{db}", "--price-file", str(prices)).start().wait_ready(60)
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=60)
        key = admin.post("/key/generate", json={"models": ["tiny"]}).json()["key"]
        yield SimpleNamespace(url=gateway.url, proc=gateway, admin=admin, key=key, db=db, booked=[])
        admin.close()
    finally:
        for proc in replicas + ([gateway] if gateway else []):
            proc.kill()


def _client(gw, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key or gw.key, max_retries=0, timeout=60)


def _new_key(gw, **body) -> str:
    answer = gw.admin.post("/key/generate", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["key"]


def test_keys_required_and_probes_open(gw):
    assert httpx.get(gw.url + "/health").status_code == 200
    answer = httpx.post(gw.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        _client(gw, key="sk-wrong").completions.create(model="tiny", prompt="x", max_tokens=1)


def test_models_listed_as_the_key_may_use_them(gw):
    assert [m.id for m in _client(gw).models.list().data] == ["tiny"]
    assert [m.id for m in _client(gw, key=MASTER).models.list().data] == ["tiny"]
    other = _new_key(gw, models=["some-other-model"])
    assert _client(gw, key=other).models.list().data == []
    with pytest.raises(openai.PermissionDeniedError):
        _client(gw, key=other).completions.create(model="tiny", prompt="x", max_tokens=1)


def test_json_answer_cost_header_from_real_usage(gw):
    raw = _client(gw).completions.with_raw_response.create(model="tiny", prompt="Hello there", max_tokens=4,
                                                           temperature=0, extra_body={"ignore_eos": True})
    out = raw.parse()
    gw.booked.append((out.usage.prompt_tokens, out.usage.completion_tokens))
    assert out.usage.completion_tokens == 4
    assert float(raw.headers["x-llmfleet-cost"]) == pytest.approx(_cost(out.usage.prompt_tokens, 4), abs=1e-8)
    assert raw.headers["x-llmfleet-replica"].startswith("http://127.0.0.1:")


def test_stream_without_usage_asked_carries_none(gw):
    chunks = list(_client(gw).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, temperature=0,
        extra_body={"ignore_eos": True}))
    assert chunks and all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)
    gw.booked.append((None, 3))  # the gateway read the usage chunk it asked for: 3 tokens are booked


def test_stream_with_usage_asked_gets_its_cost(gw):
    chunks = list(_client(gw).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, temperature=0,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens == 3
    assert usage.model_extra["cost"] == pytest.approx(_cost(usage.prompt_tokens, 3), abs=1e-8)
    gw.booked.append((usage.prompt_tokens, 3))


def test_per_model_rpm_limit_in_front_of_the_proxy(gw):
    key = _new_key(gw, models=["tiny"], model_rpm_limit={"tiny": 2})
    wait_for_minute_room()
    for _ in range(2):
        _client(gw, key=key).completions.create(model="tiny", prompt="x", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as refused:
        _client(gw, key=key).completions.create(model="tiny", prompt="x", max_tokens=1)
    error = refused.value.response
    assert error.json()["error"]["code"] == "rate_limit_exceeded" and "'tiny'" in error.json()["error"]["message"]
    assert int(error.headers["retry-after"]) >= 1


def test_budget_refuses_what_it_cannot_reserve(gw):
    key = _new_key(gw, max_budget=0.001)  # 100 asked tokens at $1000/1M reserve $0.1: more than the budget
    with pytest.raises(openai.RateLimitError) as refused:
        _client(gw, key=key).completions.create(model="tiny", prompt="x", max_tokens=100)
    assert refused.value.response.json()["error"]["code"] == "insufficient_quota"


def test_spend_booked_when_the_gateway_stops(gw):
    assert gw.proc.stop() in (0, -15)  # uvicorn re-raises SIGTERM after its shutdown (lifespan included)
    with sqlite3.connect(gw.db) as db:
        (main_id,) = db.execute("select key_id from tenancy_keys where models = ? order by created_at limit 1",
                                (json.dumps(["tiny"]),)).fetchone()
        rows = db.execute("select prompt_tokens, completion_tokens, cost, status from tenancy_spend where key_id = ?"
                          " order by started_at", (main_id,)).fetchall()
        spend = db.execute("select spend from tenancy_keys where key_id = ?", (main_id,)).fetchone()[0]
    assert len(rows) == len(gw.booked) == 3
    for (prompt, completion, cost, status), (want_prompt, want_completion) in zip(rows, gw.booked):
        assert status == 200 and completion == want_completion
        assert want_prompt in (None, prompt) and cost == pytest.approx(_cost(prompt, completion), abs=1e-8)
    assert spend == pytest.approx(sum(r[2] for r in rows))
