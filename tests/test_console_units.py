"""The console's arithmetic on real Prometheus exposition text: parsing, histogram quantiles and SLO shares, one
sample's rates, percentiles and gauges between two scrapes, the ring buffer's columns, and who is let in."""
from __future__ import annotations

import asyncio
import base64
import math

import pytest

from llmfleet.console.auth import ConsoleAuth, presented_key
from llmfleet.console.config import ConsoleConfig
from llmfleet.console.prom import Metrics, bucket_delta, quantile, share_below
from llmfleet.console.sample import Scrape, Slo, sample
from llmfleet.console.source import ConsoleError
from llmfleet.console.timeline import Timeline

INF = math.inf


def _replica_text(ttft: dict, finished: int, hits: int, queries: int, running: int) -> str:
    lines = ["# TYPE vllm:time_to_first_token_seconds histogram"]
    lines += [f'vllm:time_to_first_token_seconds_bucket{{le="{le}",model_name="tiny"}} {n}' for le, n in ttft.items()]
    lines += [f'vllm:time_to_first_token_seconds_count{{model_name="tiny"}} {ttft["+Inf"]}',
              f'vllm:time_to_first_token_seconds_sum{{model_name="tiny"}} 1.0',
              "# TYPE vllm:e2e_request_latency_seconds histogram",
              f'vllm:e2e_request_latency_seconds_bucket{{le="1.0",model_name="tiny"}} {finished}',
              f'vllm:e2e_request_latency_seconds_bucket{{le="+Inf",model_name="tiny"}} {finished}',
              f'vllm:e2e_request_latency_seconds_count{{model_name="tiny"}} {finished}',
              f'vllm:e2e_request_latency_seconds_sum{{model_name="tiny"}} 1.0',
              "# TYPE vllm:request_success counter",
              f'vllm:request_success_total{{finished_reason="length",model_name="tiny"}} {finished}',
              "# TYPE vllm:prefix_cache_hits counter", f'vllm:prefix_cache_hits_total{{model_name="tiny"}} {hits}',
              "# TYPE vllm:prefix_cache_queries counter",
              f'vllm:prefix_cache_queries_total{{model_name="tiny"}} {queries}',
              "# TYPE vllm:num_requests_running gauge", f'vllm:num_requests_running{{model_name="tiny"}} {running}']
    return "\n".join(lines) + "\n"


def _gateway_text(by_replica: dict, retries: int) -> str:
    lines = ["# TYPE llmfleet_gateway_requests counter"]
    lines += [f'llmfleet_gateway_requests_total{{policy="round-robin",replica="{url}",status="{status}",'
              f'version="{version}"}} {n}' for (url, status, version), n in by_replica.items()]
    lines += ["# TYPE llmfleet_gateway_retries counter",
              f'llmfleet_gateway_retries_total{{reason="connect:ReplicaConnectError",replica="a"}} {retries}',
              "# TYPE llmfleet_gateway_circuit_state gauge", 'llmfleet_gateway_circuit_state{replica="a"} 2.0',
              'llmfleet_gateway_circuit_state{replica="b"} 0.0']
    return "\n".join(lines) + "\n"


def test_parsing_agrees_with_prometheus_clients_parser():
    from prometheus_client.parser import text_string_to_metric_families

    text = (_replica_text({"0.1": 1, "0.5": 2, "+Inf": 3}, 3, 5, 10, 2) + _gateway_text({("a", "200", "v1"): 4}, 1)
            + '# HELP odd labels\nodd_total{a="q\\"uo}te",b="line\\nnext",c="back\\\\slash"} 3\n'
            + 'plain_gauge 1.5e3\nodd_created 1.7e9\n')
    expected: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_created"):
                expected.setdefault(s.name, []).append((s.labels, float(s.value)))
    parsed = Metrics.parse(text.encode())
    assert parsed.samples == expected
    assert parsed.samples["odd_total"] == [({"a": 'q"uo}te', "b": "line\nnext", "c": "back\\slash"}, 3.0)]
    assert parsed.total("plain_gauge") == 1500.0 and parsed.total("missing") is None
    with pytest.raises(ValueError, match="not a Prometheus sample line"):
        Metrics.parse("this is not metrics\n")


def test_quantile_and_share_interpolate_within_buckets():
    buckets = {0.1: 10.0, 0.2: 30.0, 0.4: 40.0, INF: 40.0}
    assert quantile(0.25, buckets) == pytest.approx(0.1)          # rank 10: the first bucket's top
    assert quantile(0.5, buckets) == pytest.approx(0.15)          # rank 20: halfway through (0.1, 0.2]
    assert quantile(0.875, buckets) == pytest.approx(0.3)
    assert share_below(0.15, buckets) == pytest.approx(0.5)
    assert share_below(1.0, buckets) == 1.0
    assert quantile(0.99, {0.1: 0.0, INF: 5.0}) == 0.1            # all above the largest bound: that bound
    assert quantile(0.5, {0.1: 0.0, INF: 0.0}) is None and share_below(0.1, {}) is None
    assert bucket_delta({0.1: 3.0, INF: 5.0}, {0.1: 1.0, INF: 9.0}) == {0.1: 2.0, INF: 5.0}  # reset: from zero


def test_sample_between_two_scrapes_of_a_fleet():
    before = Scrape(100.0, {"a": Metrics.parse(_replica_text({"0.1": 0, "0.5": 0, "1.0": 0, "+Inf": 0}, 0, 0, 0, 0)),
                            "b": Metrics.parse(_replica_text({"0.1": 2, "0.5": 2, "1.0": 2, "+Inf": 2}, 2, 0, 0, 0))},
                    Metrics.parse(_gateway_text({("a", "200", ""): 0, ("b", "200", "v1"): 2}, 0)), "round-robin")
    now = Scrape(102.0, {"a": Metrics.parse(_replica_text({"0.1": 4, "0.5": 8, "1.0": 8, "+Inf": 8}, 8, 30, 60, 3)),
                         "b": Metrics.parse(_replica_text({"0.1": 2, "0.5": 2, "1.0": 4, "+Inf": 4}, 4, 0, 40, 1))},
                 Metrics.parse(_gateway_text({("a", "200", ""): 8, ("b", "200", "v1"): 4, ("b", "502", "v1"): 2}, 2)),
                 "round-robin")
    values = sample(before, now, Slo(ttft_s=0.5, tpot_s=0.05))
    # gateway: 8 + 2 + 2 (the 502s count too) new answers in 2 s, 2 of them errors
    assert values["requests"] == {"total": 6.0, "errors": 1.0}
    # TTFT deltas merged: (0, 0.1] 4, (0.1, 0.5] 4, (0.5, 1.0] 2: p50 is rank 5 of 10
    assert values["ttft"]["p50"] == pytest.approx(1000 * (0.1 + 0.4 * 1 / 4))
    assert values["slo"]["ttft"] == pytest.approx(80.0) and values["slo"]["tpot"] is None
    assert values["goodput"] == {"finished": 5.0, "goodput": pytest.approx(4.0)}
    assert values["running"] == {"a": 3.0, "b": 1.0}
    assert values["prefix"] == {"fleet (round-robin)": pytest.approx(30.0), "a": 50.0, "b": 0.0}
    assert values["routing"] == {"a": 4.0, "b": 2.0}
    assert values["retries"] == {"retries": 1.0, "stream errors": 0.0, "retry connect:ReplicaConnectError": 1.0}
    assert values["circuit"] == {"a": 2.0, "b": 0.0}
    assert values["splits"] == {"unsplit": 4.0, "version v1": 2.0}
    assert values["tpot"] == {"p50": None, "p90": None, "p99": None}   # nothing observed: no percentile


def test_a_replica_that_did_not_answer_leaves_gaps_not_zeros():
    text = _replica_text({"0.1": 1, "+Inf": 1}, 1, 5, 10, 2)
    before = Scrape(0.0, {"a": Metrics.parse(text), "b": None})
    now = Scrape(1.0, {"a": Metrics.parse(text), "b": None})
    values = sample(before, now, Slo(0.5, 0.05))
    assert values["running"] == {"a": 2.0, "b": None}
    assert values["requests"] == {"total": 0.0, "errors": 0.0}   # one replica: its finished requests
    assert "routing" not in values                                # no gateway registry: no gateway charts


def test_timeline_keeps_the_window_and_aligns_lines():
    timeline = Timeline(ConsoleConfig(interval_s=1.0, window_s=3.0).capacity)
    for t in range(5):
        lines = {"a": float(t)} | ({"b": 10.0 * t} if t >= 3 else {})
        timeline.append(float(t), {"running": lines})
    assert timeline.since(None, ["running"]) == {"t": [2.0, 3.0, 4.0],
                                                 "series": {"running": {"a": [2.0, 3.0, 4.0], "b": [None, 30.0, 40.0]}}}
    assert timeline.since(3.0, ["running"])["t"] == [4.0]


def test_console_config_names_bad_fields():
    with pytest.raises(ValueError, match="console.interval_s"):
        ConsoleConfig(interval_s=0)
    with pytest.raises(ValueError, match="console.window_s"):
        ConsoleConfig(interval_s=10, window_s=5)
    with pytest.raises(ValueError, match="console.colour"):
        ConsoleConfig.from_dict({"colour": "blue"})


def _scope(client: str, authorization: str | None = None) -> dict:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return {"type": "http", "client": (client, 5000), "headers": headers}


def _status(auth: ConsoleAuth, scope: dict) -> int:
    try:
        asyncio.run(auth.check(scope))
    except ConsoleError as exc:
        return exc.status
    return 200


def test_without_keys_only_loopback_clients_get_in():
    auth = ConsoleAuth()
    assert _status(auth, _scope("127.0.0.1")) == 200 and _status(auth, _scope("::1")) == 200
    assert _status(auth, _scope("10.1.2.3")) == 403 and _status(auth, _scope("192.168.0.9", "Bearer x")) == 403


def test_an_api_key_as_bearer_or_basic_password():
    auth = ConsoleAuth(api_key="sk-replica-key")
    basic = "Basic " + base64.b64encode(b"admin:sk-replica-key").decode()
    assert _status(auth, _scope("10.1.2.3", "Bearer sk-replica-key")) == 200
    assert _status(auth, _scope("10.1.2.3", basic)) == 200
    assert _status(auth, _scope("127.0.0.1")) == 401            # a key is set: loopback needs it too
    assert _status(auth, _scope("10.1.2.3", "Bearer sk-other")) == 401
    assert presented_key([(b"authorization", b"Basic !!notbase64")]) is None


class _Counting:
    """A source whose one replica finished 3 more requests every second (scrape i at t = i)."""
    kind, can_drain = "replica", False

    def __init__(self):
        self.i = 0

    async def scrape(self) -> Scrape:
        text = f'# TYPE vllm:request_success counter\nvllm:request_success_total{{finished_reason="stop"}} {3 * self.i}\n'
        self.i += 1
        return Scrape(float(self.i - 1), {"a": Metrics.parse(text)})


def test_sample_rates_span_the_rate_window():
    from llmfleet.console.sampler import Sampler

    sampler = Sampler(_Counting(), ConsoleConfig(interval_s=1.0, window_s=60.0, rate_window_s=3.0))

    async def steps(n: int) -> None:
        for _ in range(n):
            await sampler.step()

    asyncio.run(steps(6))
    columns = sampler.timeline.since(None, ["requests"])
    assert columns["t"] == [1.0, 2.0, 3.0, 4.0, 5.0]           # the first scrape only sets the baseline
    assert columns["series"]["requests"]["total"] == [3.0] * 5  # over 1, 2, then always 3 s: the same rate
    assert sampler.last.at == 5.0
