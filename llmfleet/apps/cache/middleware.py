"""CacheMiddleware: the semantic cache in front of /v1/chat/completions and /v1/completions, pure ASGI, so it
mounts on the replica server and on the gateway alike (inside tenancy, which names the tenant).

A hit is answered here with `x-llmfleet-cache: hit-exact | hit-semantic` and `x-llmfleet-cache-id`, its usage at
zero (nothing was computed: tenancy bills nothing); every other cacheable request goes on with
`x-llmfleet-cache: miss` and its successful answer (whole or streamed) is stored.
`DELETE /v1/cache/entries/{id}[?reason=false_hit]` drops one of the tenant's entries (and counts a false hit).
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.apps.asgi import (Captured, header, json_object_or_none, lifespan, read_body, replay, send_error, send_json,
                                with_body, with_metrics)
from llmfleet.apps.cache.cache import HIT_SEMANTIC, MISS, Lookup, SemanticCache
from llmfleet.apps.cache.config import CacheConfig
from llmfleet.apps.cache.keys import CACHE_FIELD, CACHED_PATHS, CacheKeys, cache_keys, cacheable
from llmfleet.apps.cache.sse import gathered, replayed
from llmfleet.apps.tenant import tenant

CACHE_HEADER = b"x-llmfleet-cache"
ENTRIES_PATH = "/v1/cache/entries/"


class CacheMiddleware:
    def __init__(self, app: ASGIApp, config: CacheConfig):
        self.app = app
        self.cache = SemanticCache(config)
        self._lifespan = lifespan(app, self.cache.start, self.cache.close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "POST" and path in CACHED_PATHS:
            return await self._completion(scope, receive, send)
        if method == "DELETE" and path.startswith(ENTRIES_PATH):
            return await self._delete(scope, send, path[len(ENTRIES_PATH):])
        if method == "GET" and path == "/metrics":
            return await with_metrics(self.app, self.cache.metrics.registry, scope, receive, send)
        await self.app(scope, receive, send)

    async def _delete(self, scope: Scope, send: Send, entry_id: str) -> None:
        reason = parse_qs(scope.get("query_string", b"").decode()).get("reason", [""])[0]
        if not await self.cache.forget(tenant(scope), entry_id, reason == "false_hit"):
            return await send_error(send, 404, f"no cache entry {entry_id!r}", "entry_id", "not_found")
        await send_json(send, 200, {"id": entry_id, "object": "cache.entry.deleted", "deleted": True})

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        payload = json_object_or_none(body)
        if payload is None:  # the app answers malformed bodies in its own words
            return await self.app(scope, replay(body, receive), send)
        control = header(scope, b"cache-control")
        keys = cache_keys(scope["path"], payload) if cacheable(payload, control) else None
        if CACHE_FIELD in payload:  # our field, unknown upstream
            body = json.dumps({k: v for k, v in payload.items() if k != CACHE_FIELD}).encode()
            scope = with_body(scope, body)
        if keys is None:
            self.cache.metrics.skipped.labels("not_cacheable").inc()
            return await self.app(scope, replay(body, receive), send)
        who = tenant(scope)
        found = Lookup(MISS) if control and "no-cache" in control.lower() else await self.cache.lookup(who, keys)
        if found.entry is not None:
            return await _serve_hit(send, found, keys, scope["path"])
        captured = Captured(_tagged(send, MISS))
        await self.app(scope, replay(body, receive), captured.send)
        await self._keep(who, keys, captured, scope["path"], found)

    async def _keep(self, who: str, keys: CacheKeys, captured: Captured, path: str, found: Lookup) -> None:
        answer = captured.body
        if captured.status != 200 or answer is None:
            return
        if keys.stream:
            answer = gathered(answer, path) if captured.content_type().startswith("text/event-stream") else None
        if answer is None or not _complete(answer):
            return
        vector = found.vector
        if vector is None and keys.namespace is not None and keys.text is not None:
            vector = await self.cache.embed(keys.text)  # no-cache lookups skipped the embedding
        await self.cache.put(who, keys, answer, vector)


def _complete(answer: bytes) -> bool:
    """Only whole answers are stored: every choice finished by a stop or its length, never by an error."""
    try:
        choices = json.loads(answer).get("choices") or []
    except (ValueError, AttributeError):
        return False
    return bool(choices) and all(c.get("finish_reason") in ("stop", "length") for c in choices)


def _unbilled(body: bytes) -> bytes:
    """The stored answer with its usage at zero: no token was processed for a hit, and tenancy books (and
    rate-limits) the tokens that the answer's usage reports."""
    answer = json.loads(body)
    if "usage" in answer:
        answer["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return json.dumps(answer).encode()


def _tagged(send: Send, result: str) -> Send:
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (CACHE_HEADER, result.encode())]}
        await send(message)

    return tagged


async def _serve_hit(send: Send, found: Lookup, keys: CacheKeys, path: str) -> None:
    headers = [(CACHE_HEADER, found.result.encode()), (b"x-llmfleet-cache-id", found.entry.entry_id.encode())]
    if found.result == HIT_SEMANTIC:
        headers.append((b"x-llmfleet-cache-similarity", f"{found.similarity:.4f}".encode()))
    answer = _unbilled(found.entry.body)
    if keys.stream:
        body, kind = replayed(answer, path), b"text/event-stream"
    else:
        body, kind = answer, b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
