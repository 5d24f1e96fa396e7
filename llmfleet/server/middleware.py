"""Pure-ASGI middleware: request ids, the body-size limit, and the optional API key.

Pure ASGI (not BaseHTTPMiddleware) so that streaming responses pass through untouched and a client disconnect still
reaches the handler.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.server.errors import envelope_bytes

logger = logging.getLogger(__name__)
REQUEST_ID_HEADER = b"x-request-id"
OPEN_PATHS = frozenset({"/health", "/ready"})  # what orchestrators probe without credentials


async def send_error(send: Send, status: int, message: str, code: str, extra_headers: list | None = None) -> None:
    body = envelope_bytes(status, message, None, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Echo the client's X-Request-Id (or a fresh one) on the response and in scope["state"]["request_id"]."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        request_id = given.decode("latin-1")[:128] if given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": headers + [(REQUEST_ID_HEADER, request_id.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's ServerErrorMiddleware, which sits outside every middleware
            # (its 500 would lack the request id) and re-raises, so that the server drops the connection.
            if started:
                raise  # half an answer went out: only closing the connection can tell the client
            logger.exception("unhandled error on %s %s (request %s)", scope.get("method"), scope.get("path"),
                             request_id)
            await send_error(send_with_id, 500, f"internal error: {type(exc).__name__}", "internal_error")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Answer 413 when a request body exceeds `max_bytes`: at once from Content-Length, else while reading it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(send, 413, self._message(f"{int(length)} bytes"), "request_too_large")
        received, started, answered = 0, False, False

        async def counting_receive() -> Message:
            # Answer 413 the moment the limit is crossed: the app turns any error raised while it reads the body
            # into its own 400, which tracking_send then drops.
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not answered:
                    if not started:
                        answered = True
                        await send_error(send, 413, self._message(f"over {self.max_bytes} bytes"),
                                         "request_too_large")
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            pass  # already answered (or the answer had started: nothing more can be said)

    def _message(self, size: str) -> str:
        return f"the request body has {size}; the limit is {self.max_bytes} bytes"


class ApiKeyMiddleware:
    """Require `Authorization: Bearer <key>` everywhere but the probes (/health, /ready) and, when `metrics_public`,
    /metrics: the API, the docs and the OpenAPI schema all need the key. Compares digests in constant time."""

    def __init__(self, app: ASGIApp, api_key: str, metrics_public: bool = False):
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()
        self._open = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            return await send_error(send, 401, "invalid or missing API key", "invalid_api_key",
                                    [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)
