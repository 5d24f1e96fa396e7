"""/v1/models as a key sees it: only the models the key may use (all of them for a key without a model list)."""
from __future__ import annotations

import json

from starlette.types import Message, Send


def filtered_models(send: Send, allowed: tuple[str, ...]) -> Send:
    """Wraps `send` for a /v1/models answer: the list keeps only cards whose id is in `allowed`."""
    keep = frozenset(allowed)
    start: Message | None = None
    body = bytearray()

    async def filtering_send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            return await send(message)
        body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        payload = _filtered(bytes(body), keep) if start["status"] == 200 else bytes(body)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return filtering_send


def _filtered(body: bytes, keep: frozenset[str]) -> bytes:
    try:
        listing = json.loads(body)
        listing["data"] = [card for card in listing["data"] if card.get("id") in keep]
    except (ValueError, KeyError, TypeError, AttributeError):
        return body  # not a model list: passed on as it came
    return json.dumps(listing).encode()
