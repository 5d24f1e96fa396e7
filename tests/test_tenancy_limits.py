"""Limits, budgets and cost on one process (in-process counters): rpm, tpm settled with real usage, parallel
requests, team limits, the reservation race (50 concurrent against a budget for 10), cost header, stream usage."""
from __future__ import annotations

import json
import threading

import pytest

try:
    from tenancy_app import (ANSWER_COST, PRICES, RESERVATION, TenantServer, race, tenancy_config, until,
                             wait_for_minute_room)
except ImportError:
    from tests.tenancy_app import (ANSWER_COST, PRICES, RESERVATION, TenantServer, race, tenancy_config, until,
                                   wait_for_minute_room)


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('limits') / 'keys.db'}"
    with TenantServer(tenancy_config(url, prices=PRICES)) as server:
        yield server


def _error(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    return error


def test_rpm_limit_with_openai_headers(tenant):
    key = tenant.new_key(rpm_limit=3)
    wait_for_minute_room()
    answers = [tenant.chat(key) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    error = _error(answers[3], 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error" and "requests per minute" in error["message"]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_tpm_limit_is_settled_with_real_usage(tenant):
    # Each request is estimated at 11 + 5 = 16 tokens and settles to the 15 it used: 6 fit in 100, not 7.
    key = tenant.new_key(tpm_limit=100)
    wait_for_minute_room()
    statuses = [tenant.chat(key).status_code for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2
    answer = tenant.chat(key)
    _error(answer, 429, "rate_limit_exceeded")
    assert answer.headers["x-ratelimit-limit-tokens"] == "100"
    assert answer.headers["x-ratelimit-remaining-tokens"] == "10"


def test_parallel_limit(tenant):
    key = tenant.new_key(max_parallel_requests=2)
    held_before = tenant.app.held
    results = []
    threads = [threading.Thread(target=lambda: results.append(tenant.chat(key, model="hold"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert until(lambda: tenant.app.held == held_before + 2)
        _error(tenant.chat(key), 429, "rate_limit_exceeded")
    finally:
        tenant.app.release()
        for thread in threads:
            thread.join()
        tenant.app.gate.clear()
    assert [r.status_code for r in results] == [200, 200]
    assert tenant.chat(key).status_code == 200  # both slots came back


def test_team_limits_bind_all_its_keys(tenant):
    team = tenant.admin("POST", "/team/new", json={"rpm_limit": 3}).json()["team_id"]
    one, two = tenant.new_key(team_id=team), tenant.new_key(team_id=team)
    wait_for_minute_room()
    statuses = [tenant.chat(k).status_code for k in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]
    assert "team" in tenant.chat(one).json()["error"]["message"]


def test_reservation_race_admits_at_most_what_the_budget_fits(tenant):
    key = tenant.new_key(max_budget=10 * RESERVATION + 0.005)
    held_before = tenant.app.held
    try:
        answers = []
        thread = threading.Thread(target=lambda: answers.extend(race([(tenant.url, key)] * 50)))
        thread.start()
        assert until(lambda: tenant.app.held == held_before + 10, timeout=60)
        tenant.app.release()
        thread.join()
    finally:
        tenant.app.gate.clear()
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    refused = next(a for a in answers if a.status_code == 429)
    assert _error(refused, 429, "insufficient_quota")["type"] == "insufficient_quota"
    # settled at $0.02 each, $0.20 spent: no room for another $0.021 reservation
    _error(tenant.chat(key), 429, "insufficient_quota")


def test_cost_header_and_spend_log(tenant):
    key = tenant.new_key()
    answer = tenant.chat(key)
    assert answer.status_code == 200 and float(answer.headers["x-llmfleet-cost"]) == pytest.approx(ANSWER_COST)
    assert until(lambda: tenant.admin("GET", "/spend/logs", key=key).json())
    row = tenant.admin("GET", "/spend/logs", key=key).json()[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 5)
    assert row["cost"] == pytest.approx(ANSWER_COST) and row["status"] == 200
    info = tenant.admin("GET", "/key/info", key=key).json()["info"]
    assert info["spend"] == pytest.approx(ANSWER_COST)


def _events(answer) -> list:
    return [line[6:] for line in answer.text.split("\n\n") if line.startswith("data: ")]


def test_stream_usage_is_forced_upstream_and_stripped(tenant):
    key = tenant.new_key()
    answer = tenant.chat(key, stream=True)
    assert answer.status_code == 200 and tenant.app.bodies[-1]["stream_options"] == {"include_usage": True}
    events = _events(answer)
    assert events[-1] == "[DONE]" and len(events) == 4
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert until(lambda: tenant.admin("GET", "/spend/logs", key=key).json())
    assert tenant.admin("GET", "/spend/logs", key=key).json()[0]["completion_tokens"] == 5


def test_stream_usage_kept_for_clients_that_ask(tenant):
    key = tenant.new_key()
    answer = tenant.chat(key, stream=True, stream_options={"include_usage": True})
    events = _events(answer)
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == 5 and len(events) == 5
    assert usage["cost"] == pytest.approx(ANSWER_COST)  # the stream's cost, where its usage is


def test_per_model_limits_and_their_update(tenant):
    key = tenant.new_key(model_rpm_limit={"m": 2}, model_tpm_limit={"big": 10})
    info = tenant.admin("GET", "/key/info", key=key).json()["info"]
    assert info["metadata"] == {"model_rpm_limit": {"m": 2}, "model_tpm_limit": {"big": 10}}
    wait_for_minute_room()
    assert [tenant.chat(key, model="m").status_code for _ in range(3)] == [200, 200, 429]
    error = _error(tenant.chat(key, model="m"), 429, "rate_limit_exceeded")
    assert "model 'm'" in error["message"]
    assert tenant.chat(key, model="other").status_code == 200   # the limit is the model's alone
    _error(tenant.chat(key, model="big"), 429, "rate_limit_exceeded")  # 11 + 5 estimated tokens > 10
    updated = tenant.admin("POST", "/key/update", json={"key": key, "model_rpm_limit": {"m": 100}})
    assert updated.json()["info"]["metadata"]["model_rpm_limit"] == {"m": 100}
    assert updated.json()["info"]["metadata"]["model_tpm_limit"] == {"big": 10}
    assert tenant.chat(key, model="m").status_code == 200
    bad = tenant.admin("POST", "/key/generate", json={"model_rpm_limit": {"m": -1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("model_rpm_limit")


def test_models_allowed_per_key(tenant):
    key = tenant.new_key(models=["m"])
    assert tenant.chat(key, model="m").status_code == 200
    error = _error(tenant.chat(key, model="other"), 403, "model_not_allowed")
    assert error["param"] == "model"


class _BrokenLimiter:
    async def admit(self, *args):
        raise ConnectionError("no redis")


def test_unreachable_limiter_refuses_with_503(tenant):
    key = tenant.new_key()
    working, tenant.middleware.tenancy.limiter = tenant.middleware.tenancy.limiter, _BrokenLimiter()
    try:
        answer = tenant.chat(key)
    finally:
        tenant.middleware.tenancy.limiter = working
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "limiter_unavailable"
    assert answer.headers["retry-after"] == "1"
