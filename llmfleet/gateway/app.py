"""The gateway's ASGI app (plain Starlette): the OpenAI routes proxied, the fleet's own system routes.

/v1/completions, /v1/chat/completions, /v1/embeddings   proxied (proxy.py), streaming passed through
/v1/models       the union of the replicas' model cards
/health          the gateway process is up
/ready           some replica can take a request
/metrics         the gateway's own Prometheus registry
/fleet/replicas  JSON: each replica's url, model, healthy, draining, in_flight, routed, circuit

With `config.tenancy` every route but /health and /ready needs a key, and tenancy's admin API is served too.
"""
from __future__ import annotations

import contextlib
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.errors import error_response
from llmfleet.gateway.fleet import Fleet
from llmfleet.gateway.proxy import proxy

PROXIED = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")


def create_app(config: GatewayConfig, fleet: Fleet | None = None) -> Starlette:
    """The gateway over `config.replicas`; `fleet` may be passed in (tests reach its state that way)."""
    fleet = fleet or Fleet(config)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await fleet.start()
        try:
            yield
        finally:
            await fleet.stop()

    async def forward(request: Request) -> Response:
        return await proxy(fleet, request)

    async def models(request: Request) -> JSONResponse:
        cards = fleet.model_cards() or [{"id": name, "object": "model", "created": created, "owned_by": "llmfleet"}
                                        for name in fleet.models()]
        return JSONResponse({"object": "list", "data": cards})

    async def ready(request: Request) -> JSONResponse:
        available = sum(rep.available() for rep in fleet.replicas)
        status = 200 if available else 503
        return JSONResponse({"status": "ready" if available else "no_replica", "available": available}, status)

    async def metrics(request: Request) -> Response:
        return Response(fleet.metrics.render(fleet.replicas), media_type="text/plain; version=0.0.4")

    async def replicas(request: Request) -> JSONResponse:
        return JSONResponse({"policy": config.policy, "replicas": [rep.snapshot() for rep in fleet.replicas]})

    routes = [Route(path, forward, methods=["POST"]) for path in PROXIED] + [
        Route("/v1/models", models), Route("/health", health), Route("/ready", ready), Route("/metrics", metrics),
        Route("/fleet/replicas", replicas)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.fleet = fleet
    if config.apps is not None:  # semantic cache, conversations: inside tenancy, which names the tenant
        from llmfleet.apps.mount import mount

        mount(app, config.apps, config.tenancy.database_url if config.tenancy else None)
    if config.tenancy is not None:  # keys, limits, budgets, guards and spend in front of the proxy
        from llmfleet.tenancy import TenancyMiddleware

        app.add_middleware(TenancyMiddleware, config=config.tenancy)
    return app


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error_response(404, f"no route {request.method} {request.url.path}", None, "not_found")
    if exc.status_code == 405:
        return error_response(405, f"method {request.method} not allowed on {request.url.path}", None,
                              "method_not_allowed")
    return error_response(exc.status_code, str(exc.detail), None, None)
