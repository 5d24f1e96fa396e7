"""The gateway's failure handling over fixed-answer backends (real processes, started in about a second):
retries before the first byte, kill -9, circuit breaking, drain, a stream broken mid-way, no replica at all."""
from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import pytest

try:
    from fleet_procs import fixed_backend, gateway, wait_until
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import fixed_backend, gateway, wait_until

BODY = {"model": "fixed", "prompt": "hello", "max_tokens": 4}


@pytest.fixture(scope="module")
def backends():
    procs = [fixed_backend().start() for _ in range(2)]
    try:
        for p in procs:
            p.wait_ready(60)
        yield procs
    finally:
        for p in procs:
            p.kill()


@pytest.fixture(autouse=True)
def reset(backends):
    for b in backends:
        if b.proc.poll() is None:
            b.control(ready="ready", status=200, break_after=None, delay_s=0.0)


def _replicas(url: str) -> dict:
    return {r["url"]: r for r in httpx.get(url + "/fleet/replicas").json()["replicas"]}


def test_refusals_are_retried_on_another_replica_and_open_the_circuit(backends):
    a, b = backends
    with gateway([a.url, b.url], policy="round-robin", open_s=30.0) as (url, fleet):
        a.control(status=503)
        answers = [httpx.post(url + "/v1/completions", json=BODY) for _ in range(8)]
        assert [r.status_code for r in answers] == [200] * 8
        assert {r.headers["x-llmfleet-replica"] for r in answers} == {b.url}
        assert _replicas(url)[a.url]["circuit"] == "open"
        assert 'llmfleet_gateway_retries_total{reason="status:503"' in httpx.get(url + "/metrics").text


def test_server_errors_pass_through_and_open_the_circuit_until_a_trial_succeeds(backends):
    a, b = backends
    with gateway([a.url, b.url], policy="round-robin", open_s=0.5, failure_threshold=2) as (url, fleet):
        a.control(status=500)
        codes = [httpx.post(url + "/v1/completions", json=BODY).status_code for _ in range(6)]
        assert codes.count(500) == 2 and codes.count(200) == 4   # then a's circuit opened: b took the rest
        assert _replicas(url)[a.url]["circuit"] == "open"
        a.control(status=200)
        wait_until(lambda: fleet.replicas[0].breaker.allows(), 3)
        for _ in range(4):
            assert httpx.post(url + "/v1/completions", json=BODY).status_code == 200
        assert _replicas(url)[a.url]["circuit"] == "closed"


def test_a_draining_replica_gets_no_new_requests(backends):
    a, b = backends
    with gateway([a.url, b.url], policy="round-robin") as (url, fleet):
        a.control(ready="draining")
        wait_until(lambda: _replicas(url)[a.url]["draining"], 3)
        before = a.control()["served"]
        for _ in range(6):
            assert httpx.post(url + "/v1/completions", json=BODY).headers["x-llmfleet-replica"] == b.url
        assert a.control()["served"] == before
        a.control(ready="ready")
        wait_until(lambda: not _replicas(url)[a.url]["draining"], 3)


def test_a_stream_broken_mid_way_ends_with_an_error_event_and_done(backends):
    a, _ = backends
    with gateway([a.url]) as (url, fleet):
        a.control(break_after=2)
        with httpx.stream("POST", url + "/v1/completions", json={**BODY, "stream": True}) as response:
            assert response.status_code == 200
            events = [line for line in response.iter_lines() if line]
    assert len(events) == 4 and events[-1] == "data: [DONE]"
    assert json.loads(events[2][6:])["error"]["code"] == "replica_failed"
    assert all("text" in json.loads(e[6:])["choices"][0] for e in events[:2])
    assert fleet.replicas[0].in_flight == 0


def test_no_available_replica_is_a_503_in_the_openai_envelope(backends):
    a, _ = backends
    with gateway([a.url]) as (url, fleet):
        a.control(ready="broken")
        wait_until(lambda: not fleet.replicas[0].healthy, 3)
        answer = httpx.post(url + "/v1/completions", json=BODY)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "no_replica_available"
        assert httpx.get(url + "/ready").status_code == 503
        bad = httpx.post(url + "/v1/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        unknown = httpx.post(url + "/v1/completions", json={**BODY, "model": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


def test_a_429_is_passed_on_when_no_other_replica_is_left(backends):
    a, _ = backends
    with gateway([a.url]) as (url, fleet):
        a.control(status=429)
        answer = httpx.post(url + "/v1/completions", json=BODY)
        assert answer.status_code == 429 and answer.headers["x-llmfleet-replica"] == a.url


def test_weighted_versions_split_traffic_sticky_per_user(backends):
    from llmfleet.gateway.splits import parse_models

    a, b = backends
    models = parse_models({"chat": [{"version": "stable", "weight": 80, "replicas": [a.url]},
                                    {"version": "canary", "weight": 20, "replicas": [b.url]}]})
    with gateway([a.url, b.url], models=models) as (url, fleet), httpx.Client() as client:
        def ask(user: str) -> httpx.Response:
            answer = client.post(url + "/v1/completions", json={**BODY, "model": "chat", "user": user})
            assert answer.status_code == 200
            return answer

        first = {f"u{i}": ask(f"u{i}").headers["x-llmfleet-version"] for i in range(200)}
        assert abs(list(first.values()).count("canary") / 200 - 0.2) <= 0.05
        again = {user: ask(user) for user in list(first)[:20]}
        assert all(r.headers["x-llmfleet-version"] == first[u] for u, r in again.items())
        assert all(r.headers["x-llmfleet-replica"] == (b.url if first[u] == "canary" else a.url)
                   for u, r in again.items())
        assert "chat" in [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]


def test_kill_9_loses_no_request_and_the_replica_returns_within_5_s(backends):
    a, b = backends
    with gateway([a.url, b.url], policy="round-robin") as (url, fleet):
        a.control(delay_s=0.3)
        with httpx.Client(timeout=30) as client:
            with cf.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(client.post, url + "/v1/completions", json=BODY) for _ in range(16)]
                wait_until(lambda: fleet.replicas[0].in_flight > 0, 5)
                a.kill()
                assert wait_until(lambda: not fleet.replicas[0].healthy, 2) < 2
                answers = [f.result() for f in futures]
        assert [r.status_code for r in answers] == [200] * 16
        restarted = fixed_backend(a.port).start().wait_ready(60)
        backends[0] = restarted
        assert wait_until(lambda: fleet.replicas[0].available(), 5) < 5


def test_a_tiered_model_goes_to_the_cheap_tier_unless_a_rule_escalates(backends):
    from llmfleet.gateway.tiers import parse_tiers

    a, _ = backends
    tiers = parse_tiers({"auto": [{"model": "fixed", "max_prompt_tokens": 8, "escalate_on": ["(?i)prove"]},
                                  {"model": "large"}]})
    with gateway([a.url], tiers=tiers) as (url, fleet):
        cheap = httpx.post(url + "/v1/completions", json={**BODY, "model": "auto", "prompt": "hi there"})
        assert cheap.status_code == 200 and cheap.headers["x-llmfleet-tier"] == "fixed"
        for prompt, why in (("please PROVE it", "matched"), ("word " * 40, "tokens > 8")):
            answer = httpx.post(url + "/v1/completions", json={**BODY, "model": "auto", "prompt": prompt})
            assert answer.headers["x-llmfleet-tier"] == "large" and why in answer.headers["x-llmfleet-tier-reason"]
            assert answer.status_code == 404   # no replica serves "large" here: the fleet says so


def test_a_shadow_version_gets_a_copy_whose_answer_is_discarded_and_measured(backends):
    from llmfleet.gateway.splits import parse_models

    a, b = backends
    models = parse_models({"chat": [{"version": "stable", "weight": 1, "replicas": [a.url]},
                                    {"version": "next", "shadow": 1.0, "replicas": [b.url]}]})
    with gateway([a.url, b.url], models=models) as (url, fleet):
        before = b.control()["served"]
        for _ in range(10):
            answer = httpx.post(url + "/v1/completions", json={**BODY, "model": "chat"})
            assert answer.status_code == 200 and answer.headers["x-llmfleet-replica"] == a.url
        wait_until(lambda: b.control()["served"] - before == 10, 5)
        b.control(status=500)
        assert httpx.post(url + "/v1/completions", json={**BODY, "model": "chat"}).status_code == 200
        metrics = lambda: httpx.get(url + "/metrics").text   # noqa: E731
        wait_until(lambda: 'shadow_requests_total{status="500",version="next"} 1.0' in metrics(), 5)
        text = metrics()
        assert 'llmfleet_gateway_shadow_requests_total{status="200",version="next"} 10.0' in text
        assert 'llmfleet_gateway_shadow_latency_seconds_count{version="next"} 11.0' in text
        served = [line for line in text.splitlines() if line.startswith("llmfleet_gateway_requests_total")]
        assert served and all('version="stable"' in line for line in served)   # the copies are no client requests


def test_a_shadow_fraction_mirrors_about_that_share():
    from llmfleet.gateway.splits import TrafficSplit, parse_models

    split = TrafficSplit(parse_models({"m": [{"version": "v1", "replicas": ["http://a"]},
                                            {"version": "v2", "shadow": 0.25, "replicas": ["http://b"]}]}), seed=1)
    mirrored = sum(len(split.shadows_for("m")) for _ in range(2000))
    assert abs(mirrored / 2000 - 0.25) < 0.03
    assert all(split.version_for("m", f"u{i}").version == "v1" for i in range(200))
    with pytest.raises(ValueError, match="models.shadow"):
        parse_models({"m": [{"version": "v1", "replicas": ["http://a"]},
                            {"version": "v2", "shadow": 2, "replicas": ["http://b"]}]})


def test_a_tier_unsure_of_its_answer_escalates_on_mean_logprob():
    from llmfleet.gateway.tiers import parse_tiers

    small, large = fixed_backend(model="small").start(), fixed_backend(model="large").start()
    try:
        small.wait_ready(60), large.wait_ready(60)
        tiers = parse_tiers({"auto": [{"model": "small", "min_mean_logprob": -1.0}, {"model": "large"}]})
        with gateway([small.url, large.url], tiers=tiers) as (url, fleet):
            sure = httpx.post(url + "/v1/completions", json={**BODY, "model": "auto"})   # logprob -0.5 per token
            assert sure.headers["x-llmfleet-tier"] == "small" and sure.json()["choices"][0]["logprobs"] is None
            asked = httpx.post(url + "/v1/chat/completions", json={"model": "auto", "logprobs": True,
                                                                   "messages": [{"role": "user", "content": "hi"}]})
            assert asked.json()["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.5   # the client's own
            small.control(logprob=-2.0)
            unsure = httpx.post(url + "/v1/completions", json={**BODY, "model": "auto"})
            assert unsure.status_code == 200 and unsure.headers["x-llmfleet-replica"] == large.url
            assert unsure.json()["model"] == "large" and "logprobs" not in unsure.json()["choices"][0]
            assert "mean logprob -2.000 < -1" in unsure.headers["x-llmfleet-tier-reason"]
            streamed = httpx.post(url + "/v1/completions", json={**BODY, "model": "auto", "stream": True})
            assert streamed.headers["x-llmfleet-tier"] == "small"   # streams are never judged
            text = httpx.get(url + "/metrics").text
            assert ('llmfleet_gateway_tier_escalations_total{from_tier="small",reason="logprob",to_tier="large"} 1.0'
                    in text)
    finally:
        small.kill(), large.kill()
