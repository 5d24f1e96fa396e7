"""The gateway's Prometheus metrics, in a registry of its own (never the process-global one)."""
from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llmfleet.gateway.replica import STATE_CODE, Replica

_CACHED = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')
_ERROR_BUCKETS = (-1024, -256, -64, -16, -1, 0, 15, 63, 255, 1023)
_LATENCY_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class GatewayMetrics:
    def __init__(self, policy: str):
        self.policy = policy
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmfleet_gateway_requests",
                                "Requests proxied, by replica, policy, model version (of a split) and status",
                                ["replica", "policy", "version", "status"], registry=r)
        self.added_latency = Histogram("llmfleet_gateway_added_latency_seconds",
                                       "Time the gateway adds before a response starts (routing, proxying)",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.retries = Counter("llmfleet_gateway_retries", "Requests retried on another replica, by reason",
                               ["replica", "reason"], registry=r)
        self.stream_errors = Counter("llmfleet_gateway_stream_errors", "Streams that broke mid-way", ["replica"],
                                     registry=r)
        self.rejected = Counter("llmfleet_gateway_rejected", "Requests answered by the gateway itself", ["code"],
                                registry=r)
        self.predicted_cached = Counter("llmfleet_gateway_predicted_cached_tokens",
                                        "Prompt tokens the router expected the chosen replica to have cached",
                                        ["replica"], registry=r)
        self.cache_hits = Counter("llmfleet_gateway_cache_hit_tokens",
                                  "Cached prompt tokens of routed requests whose answer reported them: what the "
                                  "router predicted (source=predicted) next to what the replica's engine hit "
                                  "(source=engine, usage.prompt_tokens_details.cached_tokens)",
                                  ["replica", "source"], registry=r)
        self.prediction_error = Histogram("llmfleet_gateway_prefix_prediction_error_tokens",
                                          "Predicted minus engine-reported cached prompt tokens, per request",
                                          buckets=_ERROR_BUCKETS, registry=r)
        self.kv_events_lost = Counter("llmfleet_gateway_kv_event_batches_lost",
                                      "KV event batches a replay could no longer deliver", ["replica"], registry=r)
        self.tiers = Counter("llmfleet_gateway_tier_decisions", "Requests for a tiered model, by the tier chosen",
                             ["tier"], registry=r)
        self.shadow_requests = Counter("llmfleet_gateway_shadow_requests",
                                       "Copies sent to shadow versions, by version and outcome (answers discarded)",
                                       ["version", "status"], registry=r)
        self.shadow_latency = Histogram("llmfleet_gateway_shadow_latency_seconds",
                                        "Shadow copies: send to the end of the answer", ["version"],
                                        buckets=_LATENCY_BUCKETS + (2.0, 5.0, 10.0, 30.0), registry=r)
        self.escalations = Counter("llmfleet_gateway_tier_escalations",
                                   "Requests sent up from a tier: by a rule (length, pattern) or its answer's logprob",
                                   ["from_tier", "to_tier", "reason"], registry=r)
        self.in_flight = Gauge("llmfleet_gateway_in_flight", "Requests open on each replica", ["replica"], registry=r)
        self.circuit = Gauge("llmfleet_gateway_circuit_state", "0 closed, 1 half-open, 2 open", ["replica"],
                             registry=r)
        self.healthy = Gauge("llmfleet_gateway_replica_healthy", "1 while /ready passes", ["replica"], registry=r)
        self.draining = Gauge("llmfleet_gateway_replica_draining", "1 while the replica drains", ["replica"],
                              registry=r)

    def compare_cached(self, replica: str, predicted: int | None, answer: bytes) -> None:
        """Set what the router predicted beside what the replica reports in `answer` (a body or an SSE event)."""
        if predicted is None:
            return
        found = _CACHED.search(answer)
        if found is None:
            return
        reported = int(found.group(1))
        self.cache_hits.labels(replica, "predicted").inc(predicted)
        self.cache_hits.labels(replica, "engine").inc(reported)
        self.prediction_error.observe(predicted - reported)

    def forget(self, replica: str) -> None:
        """Drop a removed replica's gauges (its counters stay: totals must not go down)."""
        for gauge in (self.in_flight, self.circuit, self.healthy, self.draining):
            try:
                gauge.remove(replica)
            except KeyError:
                pass

    def render(self, replicas: list[Replica]) -> bytes:
        for rep in replicas:
            self.in_flight.labels(rep.url).set(rep.in_flight)
            self.circuit.labels(rep.url).set(STATE_CODE[rep.breaker.state])
            self.healthy.labels(rep.url).set(int(rep.healthy))
            self.draining.labels(rep.url).set(int(rep.draining or rep.operator_drained))
        return generate_latest(self.registry)
