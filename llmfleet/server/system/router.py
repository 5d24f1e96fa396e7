"""/health (the process and its engine are alive), /ready (serving: loaded, not draining), /v1/models (and one model
by id), /version, /metrics, /kv_events (where the engine core publishes its prefix-cache events, for the gateway).

The probes and /metrics answer HEAD too (what some load balancers and uptime checkers send); HEAD is left out of the
OpenAPI schema, which would otherwise list each of them twice under one operation id.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.kv_events import replay_endpoint
from llmfleet.protocol.openai.common import ModelCard, ModelList
from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.errors import envelope

router = APIRouter()
try:
    _VERSION = importlib.metadata.version("llmfleet")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    _VERSION = "unknown"


def _get_and_head(path: str) -> Callable:
    def register(endpoint: Callable) -> Callable:
        router.add_api_route(path, endpoint, methods=["GET"])
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return endpoint
    return register


@_get_and_head("/health")
async def health(ctx: ServingContext = Depends(serving_context)) -> JSONResponse:
    if ctx.engine.error is not None:
        return JSONResponse({"status": "engine_dead", "error": str(ctx.engine.error)}, 503)
    return JSONResponse({"status": "ok"})


@_get_and_head("/ready")
async def ready(ctx: ServingContext = Depends(serving_context)) -> JSONResponse:
    if ctx.lifecycle.draining:
        return JSONResponse({"status": "draining"}, 503)
    if ctx.engine.error is not None:
        return JSONResponse({"status": "engine_dead"}, 503)
    return JSONResponse({"status": "ready"})


@router.get("/v1/models")
async def models(ctx: ServingContext = Depends(serving_context)) -> ModelList:
    cards = [ModelCard(id=name, created=ctx.created, root=ctx.model_names[0], max_model_len=ctx.max_model_len)
             for name in ctx.model_names]
    cards += [_adapter_card(ctx, name) for name in ctx.adapters.adapters]
    return ModelList(data=cards, instance=ctx.instance_id)


def _adapter_card(ctx: ServingContext, name: str) -> ModelCard:
    lora = ctx.adapters.get(name)
    return ModelCard(id=name, created=ctx.created, root=lora.lora_path, parent=ctx.model_names[0],
                     max_model_len=ctx.max_model_len)


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, ctx: ServingContext = Depends(serving_context)) -> ModelCard:
    name = ctx.resolve_model(model_id or None)  # 404 in the envelope for a model this server does not serve
    if ctx.adapters.get(name) is not None:
        return _adapter_card(ctx, name)
    return ModelCard(id=name, created=ctx.created, root=ctx.model_names[0], max_model_len=ctx.max_model_len)


@router.get("/version")
async def version() -> dict:
    return {"version": _VERSION}


@router.get("/kv_events")
async def kv_events(ctx: ServingContext = Depends(serving_context)) -> JSONResponse:
    endpoint = ctx.engine.config.kv_events_endpoint
    if endpoint is None:
        return JSONResponse(envelope(404, "this replica publishes no KV events (start it with --kv-events-endpoint)",
                                     None, "kv_events_off"), 404)
    return JSONResponse({"endpoint": endpoint, "replay_endpoint": replay_endpoint(endpoint),
                         "block_size": ctx.engine.limits.block_size})


@_get_and_head("/metrics")
async def metrics(ctx: ServingContext = Depends(serving_context)) -> Response:
    try:
        stats = await ctx.engine.stats()
    except EngineDeadError:
        stats = None  # latencies and success counts are still worth scraping
    return Response(ctx.metrics.render(stats), media_type=CONTENT_TYPE_LATEST)
