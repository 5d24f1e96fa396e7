"""Whole request bodies in pure ASGI middleware: read one, hand it on again, fix its Content-Length. Shared by the
tenancy gate and the apps' middleware (which rewrite or inspect bodies before the app sees them)."""
from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client left before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands `body` once, then passes on what the client sends (its disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def with_body(scope: Scope, body: bytes) -> Scope:
    """`scope` with its Content-Length set to `body`'s."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}


def json_object_or_none(body: bytes) -> dict | None:
    """The body as a JSON object, or None when it is not one (the step that answers malformed bodies says why)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
