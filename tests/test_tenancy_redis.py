"""Two gateways (two tenancy instances) sharing one Redis and one database: rpm, tpm and parallel limits and the
budget reservation hold across both; a key deleted on one is refused by the other at once (pub/sub)."""
from __future__ import annotations

import threading

import pytest

try:
    from tenancy_app import PRICES, RESERVATION, TenantServer, race, tenancy_config, until, wait_for_minute_room
except ImportError:
    from tests.tenancy_app import (PRICES, RESERVATION, TenantServer, race, tenancy_config, until,
                                   wait_for_minute_room)


@pytest.fixture(scope="module")
def pair(redis_url, postgres_url):
    # a long cache TTL: only the invalidation message can make the second gateway forget a deleted key
    config = tenancy_config(postgres_url, redis_url=redis_url, prices=PRICES, cache_ttl_s=3600.0)
    with TenantServer(config) as a, TenantServer(config) as b:
        yield a, b


def test_rpm_shared_across_gateways(pair):
    a, b = pair
    key = a.new_key(rpm_limit=4)
    wait_for_minute_room()
    statuses = [(a, b)[i % 2].chat(key).status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert b.chat(key).headers["x-ratelimit-limit-requests"] == "4"


def test_tpm_shared_and_settled_across_gateways(pair):
    a, b = pair
    key = a.new_key(tpm_limit=100)
    wait_for_minute_room()
    statuses = [(a, b)[i % 2].chat(key).status_code for i in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def test_parallel_shared_across_gateways(pair):
    a, b = pair
    key = a.new_key(max_parallel_requests=1)
    held_before, results = a.app.held, []
    thread = threading.Thread(target=lambda: results.append(a.chat(key, model="hold")))
    thread.start()
    try:
        assert until(lambda: a.app.held == held_before + 1)
        answer = b.chat(key)
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        a.app.release()
        thread.join()
        a.app.gate.clear()
    assert results[0].status_code == 200 and b.chat(key).status_code == 200


def test_reservation_race_across_gateways(pair):
    a, b = pair
    key = a.new_key(max_budget=10 * RESERVATION + 0.005)
    held_before = a.app.held + b.app.held
    answers = []
    try:
        thread = threading.Thread(target=lambda: answers.extend(race([(a.url, key), (b.url, key)] * 25)))
        thread.start()
        assert until(lambda: a.app.held + b.app.held == held_before + 10, timeout=60)
        a.app.release()
        b.app.release()
        thread.join()
    finally:
        a.app.gate.clear()
        b.app.gate.clear()
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} == {"insufficient_quota"}
    assert b.chat(key).json()["error"]["code"] == "insufficient_quota"


def test_deleted_key_refused_by_the_other_gateway(pair):
    a, b = pair
    key = a.new_key()
    assert b.chat(key).status_code == 200  # now cached on b for an hour
    key_id = a.admin("GET", "/key/info", params={"key": key}).json()["key_id"]
    assert a.admin("POST", "/key/delete", json={"key_ids": [key_id]}).json() == {"deleted_keys": [key_id]}
    assert until(lambda: b.chat(key).status_code == 401)


def test_updated_limit_reaches_the_other_gateway(pair):
    a, b = pair
    key = a.new_key()
    assert b.chat(key).status_code == 200
    key_id = a.admin("GET", "/key/info", params={"key": key}).json()["key_id"]
    a.admin("POST", "/key/update", json={"key_id": key_id, "models": ["only-this"]})
    assert until(lambda: b.chat(key).status_code == 403)
