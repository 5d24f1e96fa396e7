"""Small pure-ASGI helpers the apps' middleware share: whole bodies in and out, JSON answers in OpenAI's error
envelope, an answer captured on its way to the client, and the apps' metrics appended to the app's /metrics."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.tenancy.bodies import json_object_or_none, read_body, replay, with_body  # noqa: F401 (re-exported)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json(send: Send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def error_payload(status: int, message: str, param: str | None, code: str) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def send_error(send: Send, status: int, message: str, param: str | None, code: str) -> None:
    await send_json(send, status, error_payload(status, message, param, code))


class Captured:
    """What the app answered: status, headers and (up to `limit` bytes) the body, while it streams on to the client
    unchanged (`send`). `body` is None when the answer was larger than `limit`."""

    def __init__(self, send: Send, limit: int = 8 << 20):
        self._send, self._limit = send, limit
        self.status, self.headers, self._parts, self._size = 0, [], [], 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body" and self._size <= self._limit:
            chunk = message.get("body", b"")
            self._size += len(chunk)
            self._parts.append(chunk)
        await self._send(message)

    @property
    def body(self) -> bytes | None:
        return b"".join(self._parts) if self._size <= self._limit else None

    def content_type(self) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == b"content-type"), "")


async def with_metrics(app: ASGIApp, registry: CollectorRegistry, scope: Scope, receive: Receive,
                       send: Send) -> None:
    """GET /metrics: the app's own exposition with `registry`'s appended (one scrape sees both)."""
    head: dict = {}
    parts: list[bytes] = []

    async def gather(message: Message) -> None:
        if message["type"] == "http.response.start":
            head.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _finish(send, head, b"".join(parts), registry)

    await app(scope, receive, gather)


async def _finish(send: Send, head: dict, body: bytes, registry: CollectorRegistry) -> None:
    if head.get("status") == 200:
        body = body + (b"" if not body or body.endswith(b"\n") else b"\n") + generate_latest(registry)
    headers = [(k, v) for k, v in head.get("headers", []) if k.lower() != b"content-length"]
    await send({**head, "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def lifespan(app: ASGIApp, start, stop):
    """An ASGI lifespan handler that runs `start()` after the app's startup and `stop()` after its shutdown,
    so inner middleware (tenancy's database) is up first and closed last."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        async def on_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await start()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await stop()
            await send(message)

        await app(scope, receive, on_send)

    return handle
