"""Forwarding one OpenAI request: pick a replica, send the client's bytes unchanged, relay the answer.

A request that fails before the client got its first byte (connect error, connection lost before the answer,
503, 429) is retried on another replica, up to `max_retries` times; the last 429/503 is passed on if none is left.
Streams are relayed event by event (whole `\\n\\n`-terminated SSE events only), so a stream that breaks mid-way
ends with one error event and `data: [DONE]` rather than a cut-off line. Connect errors, lost connections and 5xx
answers count against the replica's circuit breaker.
"""
from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from llmfleet.gateway.client import HOP_BY_HOP, ReplicaError, ReplicaResponse
from llmfleet.gateway.escalation import apply_tier, judged
from llmfleet.gateway.errors import error_response, json_object, sse_error
from llmfleet.gateway import responses
from llmfleet.gateway.fleet import Fleet
from llmfleet.gateway.policies import RoutingRequest, session_key_of
from llmfleet.gateway.relay import Release, RelayResponse
from llmfleet.gateway.replica import Replica
from llmfleet.gateway.splits import body_for

_PASS_BACK = ("content-type", "x-request-id", "retry-after")
REPLICA_HEADER = "x-llmfleet-replica"
VERSION_HEADER = "x-llmfleet-version"


class _Failed:
    """One attempt's failure; `response` is what the client gets if no retry is left (None: a gateway 502)."""
    __slots__ = ("reason", "response")

    def __init__(self, reason: str, response: Response | None = None):
        self.reason, self.response = reason, response


async def proxy(fleet: Fleet, request: Request) -> Response:
    start = time.perf_counter()
    body = await request.body()
    route = _routing_request(request, body)
    if isinstance(route, Response):
        return route
    previous = route.payload.get("previous_response_id") if route.path == "/v1/responses" else None
    if isinstance(previous, str):  # a follow-up: only the replica holding the conversation can answer it
        rep = responses.owner(fleet, previous)
        if rep is None:
            return responses.not_found(previous, "previous_response_id")
        route.pinned = rep.url
    virtual = route.model
    tiered = fleet.tiers.resolve(route.model, route.path, route.payload)
    if tiered is not None:
        body = apply_tier(route, *tiered, route.payload)
        fleet.metrics.tiers.labels(route.model).inc()
        if tiered[0] is not fleet.tiers.tiers[virtual][0]:
            fleet.metrics.escalations.labels(fleet.tiers.tiers[virtual][0].model, route.model, "rule").inc()
    if route.model and not fleet.knows(route.model):
        fleet.metrics.rejected.labels("model_not_found").inc()
        return error_response(404, f"The model `{route.model}` does not exist. The fleet serves: "
                                   f"{', '.join(fleet.models())}", "model", "model_not_found", _route_headers(route))
    headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
    path = request.url.path

    async def forward(content: bytes) -> Response:
        return await _forward(fleet, route, path, content, headers, start)

    if tiered is not None and tiered[0].min_mean_logprob is not None and route.payload.get("stream") is not True:
        return await judged(fleet, route, virtual, tiered[0], forward)
    return await forward(body)


async def _forward(fleet: Fleet, route: RoutingRequest, path: str, body: bytes, headers: dict,
                   start: float) -> Response:
    """The request to one replica of its model (version), retried on others while it fails before a byte."""
    route.version = fleet.split.version_for(route.model, route.session_key)
    if fleet.split.has_shadows:
        fleet.shadows.mirror(route, path, body, headers)
    tried: list[Replica] = []
    failed: _Failed | None = None
    for _ in range(fleet.config.max_retries + 1):
        rep = fleet.pick(route, tried)
        if rep is None:
            break
        if failed is not None:
            fleet.metrics.retries.labels(tried[-1].url, failed.reason).inc()
        tried.append(rep)
        outcome = await _attempt(fleet, rep, route, path, body_for(route, rep, body), headers, start)
        if not isinstance(outcome, _Failed):
            return outcome
        failed = outcome
    return _give_up(fleet, route, failed, tried)


def _routing_request(request: Request, body: bytes) -> RoutingRequest | Response:
    payload = json_object(body)
    if isinstance(payload, Response):
        return payload
    model = payload.get("model")
    return RoutingRequest(request.url.path, payload, model if isinstance(model, str) and model else None,
                          session_key_of(request.headers, payload))


def _give_up(fleet: Fleet, route: RoutingRequest, failed: _Failed | None, tried: list[Replica]) -> Response:
    if failed is not None and failed.response is not None:
        return failed.response
    if failed is not None:
        fleet.metrics.rejected.labels("replicas_failed").inc()
        return error_response(502, f"every replica tried failed ({failed.reason}): "
                                   f"{', '.join(r.url for r in tried)}", None, "replicas_failed",
                              _route_headers(route))
    fleet.metrics.rejected.labels("no_replica").inc()
    return error_response(503, "no healthy replica serves this model right now; retry later", None,
                          "no_replica_available", {"Retry-After": "1", **_route_headers(route)})


async def _attempt(fleet: Fleet, rep: Replica, route: RoutingRequest, path: str, body: bytes, headers: dict,
                   start: float) -> Response | _Failed:
    rep.in_flight += 1
    rep.routed += 1
    rep.breaker.on_send()
    sent = time.perf_counter()
    try:
        upstream = await fleet.client.send("POST", rep.url, path, body, headers)
    except ReplicaError as exc:
        return _failure(rep, f"connect:{type(exc).__name__}")
    if upstream.status_code in (429, 503):
        return await _refused(fleet, rep, upstream)
    if route.payload.get("stream") is True:
        return await _stream(fleet, rep, route, upstream, start, sent)
    try:
        content = await upstream.read()
    except ReplicaError as exc:
        return _failure(rep, f"read:{type(exc).__name__}")
    rep.in_flight -= 1
    _judge(rep, upstream.status_code)
    response = Response(content, upstream.status_code, headers=_answer_headers(rep, upstream, route))
    _account(fleet, rep, route, upstream.status_code, start, time.perf_counter() - sent)
    if upstream.status_code == 200:
        fleet.metrics.compare_cached(rep.url, route.predicted_cached_tokens, content)
    return response


async def _refused(fleet: Fleet, rep: Replica, upstream: ReplicaResponse) -> _Failed:
    """429 / 503 before any byte reached the client: someone else may take it."""
    try:
        content = await upstream.read()
    except ReplicaError:
        content = b""
    rep.in_flight -= 1
    if upstream.status_code == 503:
        if b'"draining"' in content:
            rep.draining = True   # the health check confirms or clears it
        else:
            rep.breaker.failure()
    fleet.metrics.requests.labels(rep.url, fleet.metrics.policy, "", str(upstream.status_code)).inc()
    passed_on = Response(content, upstream.status_code, headers=_answer_headers(rep, upstream, None))
    return _Failed(f"status:{upstream.status_code}", passed_on)


async def _stream(fleet: Fleet, rep: Replica, route: RoutingRequest, upstream: ReplicaResponse, start: float,
                  sent: float) -> RelayResponse | _Failed:
    chunks = upstream.chunks()
    try:
        first = await anext(chunks, b"")
    except ReplicaError as exc:
        upstream.close()
        return _failure(rep, f"read:{type(exc).__name__}")
    _account(fleet, rep, route, upstream.status_code, start, time.perf_counter() - sent)
    release = Release(rep, upstream)
    return RelayResponse(upstream.status_code, _answer_headers(rep, upstream, route),
                         _relay(fleet, rep, route, upstream, chunks, first, release), release)


async def _relay(fleet: Fleet, rep: Replica, route: RoutingRequest, upstream: ReplicaResponse, chunks,
                 first: bytes, release: Release):
    """Whole SSE events from the replica; on a break, an error event and [DONE] instead of the partial tail.
    A usage event (stream_options.include_usage) has its cached tokens set beside the router's prediction."""
    tail = b""
    predicted = route.predicted_cached_tokens
    try:
        data = first
        while data:
            buffer = tail + data
            cut = buffer.rfind(b"\n\n") + 2
            if cut >= 2:
                events = buffer[:cut]
                if predicted is not None and b'"cached_tokens"' in events:
                    fleet.metrics.compare_cached(rep.url, predicted, events)
                yield events
            tail = buffer[cut:] if cut >= 2 else buffer
            data = await anext(chunks, b"")
        if tail:
            yield tail
        _judge(rep, upstream.status_code)
    except ReplicaError as exc:
        rep.breaker.failure()
        fleet.metrics.stream_errors.labels(rep.url).inc()
        yield sse_error(f"the replica {rep.url} failed mid-stream: {type(exc).__name__}")
    finally:
        release()


def _failure(rep: Replica, reason: str) -> _Failed:
    rep.in_flight -= 1
    rep.failures += 1
    rep.breaker.failure()
    return _Failed(reason)


def _judge(rep: Replica, status: int) -> None:
    if status >= 500:
        rep.failures += 1
        rep.breaker.failure()
    else:
        rep.breaker.success()


def _answer_headers(rep: Replica, upstream: ReplicaResponse, route: RoutingRequest | None) -> dict:
    headers = {k: upstream.headers[k] for k in _PASS_BACK if k in upstream.headers}
    headers[REPLICA_HEADER] = rep.url
    return headers | (_route_headers(route) if route is not None else {})


def _route_headers(route: RoutingRequest) -> dict:
    """What the gateway decided: the split version, the tier and why, the predicted cache hit."""
    headers = {}
    if route.version is not None:
        headers[VERSION_HEADER] = route.version.version
    if route.tier is not None:
        headers["x-llmfleet-tier"] = route.tier[0]
        headers["x-llmfleet-tier-reason"] = route.tier[1].encode("ascii", "replace").decode()
    if route.predicted_cached_tokens is not None:
        headers["x-llmfleet-predicted-cached-tokens"] = str(route.predicted_cached_tokens)
    return headers


def _account(fleet: Fleet, rep: Replica, route: RoutingRequest, status: int, start: float, upstream_s: float):
    version = route.version.version if route.version is not None else ""
    fleet.metrics.requests.labels(rep.url, fleet.metrics.policy, version, str(status)).inc()
    fleet.metrics.added_latency.observe(max(0.0, time.perf_counter() - start - upstream_s))
    if route.predicted_cached_tokens:
        fleet.metrics.predicted_cached.labels(rep.url).inc(route.predicted_cached_tokens)
