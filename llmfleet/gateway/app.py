"""The gateway's ASGI app (plain Starlette): the OpenAI routes proxied, the fleet's own system routes.

/v1/completions, /v1/chat/completions, /v1/responses, /v1/embeddings   proxied (proxy.py), streams passed through
/v1/responses/{id}[/input_items|/cancel]   to the replica that stored it (responses.py)
/v1/models       the union of the replicas' model cards
/health          the gateway process is up
/ready           some replica can take a request
/metrics         the gateway's own Prometheus registry
/fleet/replicas  JSON: each replica's url, model, healthy, draining, in_flight, routed, circuit
/console         the operator console and its JSON API (llmfleet/console/app.py): admins only

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
from llmfleet.gateway.responses import forward_stored

PROXIED = ("/v1/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings")


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

    async def stored(request: Request) -> Response:
        return await forward_stored(fleet, request)

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
        Route("/fleet/replicas", replicas), Route("/v1/responses/{response_id}", stored, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/input_items", stored), Route("/v1/responses/{response_id}/cancel", stored,
                                                                          methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.fleet = fleet
    tenancy = None
    if config.apps is not None:  # semantic cache, conversations: inside tenancy, which names the tenant
        from llmfleet.apps.mount import mount

        mount(app, config.apps, config.tenancy.database_url if config.tenancy else None)
    if config.tenancy is not None:  # keys, limits, budgets, guards and spend in front of the proxy
        from llmfleet.tenancy import TenancyMiddleware
        from llmfleet.tenancy.service import Tenancy

        tenancy = Tenancy(config.tenancy)
        app.add_middleware(TenancyMiddleware, config=config.tenancy, tenancy=tenancy)
    if config.console.enabled:  # outside tenancy: it checks admin keys itself and reads the spend tables
        from llmfleet.console.app import ConsoleMiddleware
        from llmfleet.gateway.console import GatewaySource

        app.add_middleware(ConsoleMiddleware, source=GatewaySource(fleet, config.console.scrape_timeout_s),
                           config=config.console, tenancy=tenancy)
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
