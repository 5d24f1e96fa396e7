"""ConsoleMiddleware: pure ASGI, mounted outermost of the host's auth so that it answers /console itself.

GET  /console                     the page (static/index.html: uPlot charts, the replica table, spend)
GET  /console/static/NAME         its scripts, styles and the vendored uPlot
GET  /console/api/timeseries      samples as aligned columns; ?since=T returns only samples after T
GET  /console/api/replicas        the replica table (health, draining, version, circuit, load)
POST /console/api/replicas/drain  {"url": URL}: send the replica nothing new (gateway only); .../undrain reverses
GET  /console/api/spend           spend per key, team and model over ?window=S seconds, budgets and alerts

Every path needs an admin (auth.py). The sampler runs for the host's life: it starts when the host's lifespan
startup completes and stops before its shutdown begins (the host still serves its scrapes meanwhile).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.console.auth import ConsoleAuth
from llmfleet.console.config import ConsoleConfig
from llmfleet.console.sampler import Sampler
from llmfleet.console.source import ConsoleError, ConsoleSource
from llmfleet.console.spend import spend_view
from llmfleet.console.timeline import CHARTS

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
MAX_BODY = 4096
MAX_SPEND_WINDOW_S = 31 * 86400


def _static_files() -> dict[str, Path]:
    """What /console/static/ serves: the files shipped in static/, by their relative path (nothing else)."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}


class ConsoleMiddleware:
    def __init__(self, app: ASGIApp, source: ConsoleSource, config: ConsoleConfig, tenancy=None,
                 api_key: str | None = None):
        self.app, self.source, self.config, self.tenancy = app, source, config, tenancy
        self.auth = ConsoleAuth(tenancy, api_key)
        self.sampler = Sampler(source, config)
        self._files = _static_files()
        self._charts = [c for c, (_, _, scope) in CHARTS.items() if scope == "fleet" or source.kind == "gateway"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)
        try:
            await self.auth.check(scope)
            response = await self._route(scope, receive, path[len(PREFIX):] or "/")
        except ConsoleError as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, path: str) -> Response:
        method, query = scope["method"], dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if path.startswith("/api/replicas/") and path[len("/api/replicas/"):] in ("drain", "undrain"):
            _allow(method, "POST", path)
            _same_origin(scope)
            url = await _replica_url(receive)
            row = await self.source.drain(url, path.endswith("/drain"))
            return JSONResponse({"replica": row})
        _allow(method, "GET", path)
        if path in ("/", "/index.html"):
            return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})
        if path.startswith("/static/") and path[len("/static/"):] in self._files:
            return FileResponse(self._files[path[len("/static/"):]], headers={"cache-control": "no-cache"})
        if path == "/api/timeseries":
            return JSONResponse(self.timeseries(_number(query, "since", None, 0, math.inf)))
        if path == "/api/replicas":
            return JSONResponse({"kind": self.source.kind, "can_drain": self.source.can_drain,
                                 "replicas": self.source.replicas()})
        if path == "/api/spend":
            return JSONResponse(await self.spend(_number(query, "window", 3600.0, 60.0, MAX_SPEND_WINDOW_S)))
        raise ConsoleError(404, f"no console route {method} {PREFIX}{path}", "not_found")

    def timeseries(self, since: float | None) -> dict:
        """The samples after `since` (all of the window when None), with what the page needs to draw them."""
        last = self.sampler.last
        return {"kind": self.source.kind, "policy": last.policy if last else None, "now": time.time(),
                "interval_s": self.config.interval_s, "window_s": self.config.window_s,
                "rate_window_s": self.config.interval_s * self.config.rate_span,
                "slo": {"ttft_ms": 1000 * self.config.ttft_slo_s, "tpot_ms": 1000 * self.config.tpot_slo_s},
                "charts": [{"id": c, "title": CHARTS[c][0], "unit": CHARTS[c][1]} for c in self._charts],
                **self.sampler.timeline.since(since, self._charts)}

    async def spend(self, window_s: float) -> dict:
        if self.tenancy is None or self.tenancy.store is None:
            return {"enabled": False, "reason": "tenancy is off: start with --master-key to meter spend"}
        now = time.time()
        return {"enabled": True, "window_s": window_s, **await spend_view(self.tenancy.store, now - window_s, now)}

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self.config.enabled:
                await self.sampler.stop()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and self.config.enabled:
                self.source.start(scope.get("state", {}))
                self.sampler.start()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)


def error_response(exc: ConsoleError) -> JSONResponse:
    kind = {401: "invalid_request_error", 403: "permission_error", 503: "service_unavailable"}.get(
        exc.status, "invalid_request_error")
    error = {"message": exc.message, "type": kind, "param": None, "code": exc.code}
    return JSONResponse({"error": error}, exc.status, headers=exc.headers)


def _allow(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise ConsoleError(405, f"method {method} not allowed on {PREFIX}{path}", "method_not_allowed",
                           {"allow": expected})


def _number(query: dict, name: str, default: float | None, least: float, most: float) -> float | None:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not least <= value <= most:
        raise ConsoleError(400, f"{name}: a number in [{least:g}, {most:g}] expected, got {text!r}", "invalid_value")
    return value


def _same_origin(scope: Scope) -> None:
    """Actions only from the console's own page or a script: a browser's cached Basic credentials go with
    cross-site requests too, and a cross-site form can send neither application/json nor a same-origin Origin."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ConsoleError(415, "console actions take a JSON body (content-type: application/json)",
                           "unsupported_media_type")
    origin = headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != headers.get("host"):
        raise ConsoleError(403, f"a console action from another origin ({origin}) is refused", "cross_origin")


async def _replica_url(receive: Receive) -> str:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            raise ConsoleError(413, f"console bodies are limited to {MAX_BODY} bytes", "request_too_large")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ConsoleError(400, "the request body is not valid JSON", "invalid_json") from None
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        raise ConsoleError(400, "url: the replica's URL (as the replica table lists it) is required", "invalid_value")
    return url
