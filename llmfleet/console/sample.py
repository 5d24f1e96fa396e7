"""One console sample: what changed between two scrapes of the fleet, as chart -> line -> value.

Rates are counter deltas over the interval (a counter that went down, a restarted replica, counts from zero);
percentiles come from the interval's histogram bucket deltas merged across replicas (Prometheus'
histogram_quantile); gauges are read as they are. A value is None where nothing was observed (no request
finished: no TTFT percentile) or the replica did not answer its scrape.

Goodput is an upper bound from histograms, not a per-request count: finished requests per second times the smaller
of the shares within the TTFT and the TPOT SLO (a request meets both at most as often as it meets either).
"""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.console.prom import Metrics, bucket_delta, merged_buckets, quantile, share_below

Sample = dict[str, dict[str, float | None]]
GATEWAY_REQUESTS = "llmfleet_gateway_requests_total"
HISTOGRAMS = {"ttft": "vllm:time_to_first_token_seconds", "tpot": "vllm:request_time_per_output_token_seconds",
              "e2e": "vllm:e2e_request_latency_seconds", "queue": "vllm:request_queue_time_seconds"}
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass(slots=True)
class Scrape:
    """Everything read at one instant: each replica's engine metrics and, on a gateway, the gateway's own."""
    at: float                                   # time.time() of the scrape
    replicas: dict[str, Metrics | None]         # replica -> its /metrics (None: it did not answer)
    gateway: Metrics | None = None              # the gateway's registry; None on a single replica
    policy: str | None = None                   # the gateway's routing policy


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_s: float
    tpot_s: float


def sample(before: Scrape, now: Scrape, slo: Slo) -> Sample:
    """The charts' values for the interval (before, now]."""
    dt = max(now.at - before.at, 1e-6)
    out: Sample = {"requests": _requests(before, now, dt), "tokens": _tokens(before, now, dt)}
    latency = {name: bucket_delta(merged_buckets(list(now.replicas.values()), metric),
                                  merged_buckets(list(before.replicas.values()), metric))
               for name, metric in HISTOGRAMS.items()}
    for name, buckets in latency.items():
        out[name] = {label: _ms(quantile(q, buckets)) for label, q in QUANTILES}
    out.update(_slo(latency, slo, dt))
    out["running"] = _gauge(now, "vllm:num_requests_running")
    out["waiting"] = _gauge(now, "vllm:num_requests_waiting")
    out["kv"] = {url: None if v is None else 100.0 * v for url, v in _gauge(now, "vllm:kv_cache_usage_perc").items()}
    out["prefix"] = _prefix(before, now)
    if now.gateway is not None and before.gateway is not None:
        out.update(_gateway(before.gateway, now.gateway, dt))
    return out


def _delta(now: float | None, before: float | None) -> float | None:
    if now is None:
        return None
    before = before or 0.0
    return now - before if now >= before else now


def _rate(now: float | None, before: float | None, dt: float) -> float | None:
    change = _delta(now, before)
    return None if change is None else change / dt


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


def _each(before: Scrape, now: Scrape):
    """(replica, metrics now, metrics before) for replicas that answered both scrapes."""
    for url, metrics in now.replicas.items():
        previous = before.replicas.get(url)
        if metrics is not None and previous is not None:
            yield url, metrics, previous


def _fleet_rate(before: Scrape, now: Scrape, name: str, dt: float, **match: str) -> float | None:
    rates = [_rate(m.total(name, **match), p.total(name, **match), dt) for _, m, p in _each(before, now)]
    rates = [r for r in rates if r is not None]
    return sum(rates) if rates else None


def _requests(before: Scrape, now: Scrape, dt: float) -> dict[str, float | None]:
    if now.gateway is not None and before.gateway is not None:
        g, p = now.gateway, before.gateway
        total = _rate(g.total(GATEWAY_REQUESTS), p.total(GATEWAY_REQUESTS), dt) or 0.0
        errors = sum(_rate(value, p.by(GATEWAY_REQUESTS, "status").get(status), dt) or 0.0
                     for status, value in g.by(GATEWAY_REQUESTS, "status").items()
                     if status.isdigit() and int(status) >= 500)
        errors += _rate(g.total("llmfleet_gateway_rejected_total"), p.total("llmfleet_gateway_rejected_total"),
                        dt) or 0.0
        return {"total": total, "errors": errors}
    finished = _fleet_rate(before, now, "vllm:request_success_total", dt)
    aborted = _fleet_rate(before, now, "vllm:request_success_total", dt, finished_reason="abort")
    return {"total": finished, "errors": (aborted or 0.0) if finished is not None else None}


def _tokens(before: Scrape, now: Scrape, dt: float) -> dict[str, float | None]:
    return {"prompt": _fleet_rate(before, now, "vllm:prompt_tokens_total", dt),
            "generation": _fleet_rate(before, now, "vllm:generation_tokens_total", dt)}


def _slo(latency: dict[str, dict[float, float]], slo: Slo, dt: float) -> Sample:
    ttft = share_below(slo.ttft_s, latency["ttft"])
    tpot = share_below(slo.tpot_s, latency["tpot"])
    finished = latency["e2e"].get(float("inf"), 0.0) / dt
    shares = [s for s in (ttft, tpot) if s is not None]
    goodput = finished * min(shares) if shares else (0.0 if finished == 0 else None)
    return {"goodput": {"finished": finished, "goodput": goodput},
            "slo": {"ttft": None if ttft is None else 100.0 * ttft, "tpot": None if tpot is None else 100.0 * tpot}}


def _gauge(now: Scrape, name: str) -> dict[str, float | None]:
    return {url: None if m is None else m.total(name) for url, m in now.replicas.items()}


def _prefix(before: Scrape, now: Scrape) -> dict[str, float | None]:
    """Prompt tokens found in each replica's prefix cache over those looked up, in %, and the fleet's."""
    out, hits, queries = {}, 0.0, 0.0
    for url in now.replicas:
        m, p = now.replicas[url], before.replicas.get(url)
        if m is None or p is None:
            out[url] = None
            continue
        h = _delta(m.total("vllm:prefix_cache_hits_total"), p.total("vllm:prefix_cache_hits_total")) or 0.0
        q = _delta(m.total("vllm:prefix_cache_queries_total"), p.total("vllm:prefix_cache_queries_total")) or 0.0
        out[url] = 100.0 * h / q if q else None
        hits, queries = hits + h, queries + q
    label = f"fleet ({now.policy})" if now.policy else "replica"
    if len(now.replicas) > 1 or now.policy:
        out = {label: 100.0 * hits / queries if queries else None, **out}
    return out


def _gateway(p: Metrics, g: Metrics, dt: float) -> Sample:
    """Routing, retries, circuits and splits, from the gateway's own registry."""
    def rates(name: str, label: str, **match: str) -> dict[str, float]:
        before = p.by(name, label, **match)
        return {key: _rate(value, before.get(key), dt) or 0.0 for key, value in g.by(name, label, **match).items()}

    retries = {"retries": _rate(g.total("llmfleet_gateway_retries_total"),
                                p.total("llmfleet_gateway_retries_total"), dt) or 0.0,
               "stream errors": _rate(g.total("llmfleet_gateway_stream_errors_total"),
                                      p.total("llmfleet_gateway_stream_errors_total"), dt) or 0.0}
    retries.update({f"retry {reason}": v for reason, v in rates("llmfleet_gateway_retries_total", "reason").items()})
    versions = rates(GATEWAY_REQUESTS, "version")
    splits = {("unsplit" if version == "" else f"version {version}"): v for version, v in versions.items()}
    splits.update({f"tier {tier}": v for tier, v in rates("llmfleet_gateway_tier_decisions_total", "tier").items()})
    escalated = _rate(g.total("llmfleet_gateway_tier_escalations_total"),
                      p.total("llmfleet_gateway_tier_escalations_total"), dt)
    if escalated is not None:
        splits["escalated"] = escalated
    return {"routing": rates(GATEWAY_REQUESTS, "replica"), "retries": retries,
            "circuit": g.by("llmfleet_gateway_circuit_state", "replica"), "splits": splits or {"unsplit": 0.0}}
