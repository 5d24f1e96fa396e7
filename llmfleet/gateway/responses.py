"""Stored responses behind the gateway: a response lives in the replica process that answered it, and its id names
that process (protocol/openai/responses.py), which each replica lists in its /v1/models. Follow-ups
(`previous_response_id`) are pinned to that replica; GET / DELETE / input_items are forwarded to it."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from llmfleet.gateway.client import HOP_BY_HOP, ReplicaError
from llmfleet.gateway.errors import error_response
from llmfleet.gateway.fleet import Fleet
from llmfleet.gateway.replica import Replica
from llmfleet.protocol.openai.responses import instance_of


def owner(fleet: Fleet, response_id: str) -> Replica | None:
    """The replica whose process stored `response_id` (None: unknown id, or that process is gone)."""
    instance = instance_of(response_id)
    return next((rep for rep in fleet.replicas if instance is not None and rep.instance == instance), None)


def not_found(response_id: str, param: str) -> Response:
    return error_response(404, f"{param}: no stored response with id {response_id!r} in this fleet (its replica "
                               f"may have restarted)", param, "not_found")


async def forward_stored(fleet: Fleet, request: Request) -> Response:
    """GET / DELETE /v1/responses/{id}[/input_items], POST .../cancel: answered by the owning replica."""
    response_id = request.path_params["response_id"]
    rep = owner(fleet, response_id)
    if rep is None or not rep.healthy:
        return not_found(response_id, "response_id")
    headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    try:
        upstream = await fleet.client.send(request.method, rep.url, path, await request.body(), headers,
                                           fleet.config.request_timeout_s)
        body = await upstream.read()
    except ReplicaError as exc:
        return error_response(502, f"replica {rep.url} did not answer: {exc}", None, "replica_error")
    return Response(body, upstream.status_code, media_type="application/json")
