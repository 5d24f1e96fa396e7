"""ConversationMiddleware: the Conversations API, and chat requests naming a `conversation` sent on with its
history in front (context.py) and recorded as its next turns once answered. Pure ASGI, inside tenancy."""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from llmfleet.apps.asgi import (Captured, json_object_or_none, lifespan, read_body, replay, send_error, send_json,
                                with_body)
from llmfleet.apps.cache.keys import CHAT_PATH
from llmfleet.apps.cache.sse import gathered
from llmfleet.apps.endpoint import EndpointError
from llmfleet.apps.memory import routes
from llmfleet.apps.memory.config import MemoryConfig
from llmfleet.apps.memory.service import Memory, NotFound, Prepared
from llmfleet.apps.tenant import tenant

logger = logging.getLogger(__name__)
TOKENS_HEADER = b"x-llmfleet-conversation-tokens"
RECALLED_HEADER = b"x-llmfleet-conversation-recalled"  # item positions (1 = the first item) recalled by similarity


class ConversationMiddleware:
    def __init__(self, app: ASGIApp, config: MemoryConfig, database_url: str | None = None):
        self.app = app
        self.memory = Memory(config, database_url)
        self._lifespan = lifespan(app, self.memory.start, self.memory.close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if path == routes.PREFIX or path.startswith(routes.PREFIX + "/"):
            return await self._api(scope, receive, send, path)
        if scope["method"] == "POST" and path == CHAT_PATH:
            return await self._chat(scope, receive, send)
        await self.app(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        body = await read_body(receive)
        if body is None:
            return
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("body: a JSON object expected")
            parts = [p for p in path[len(routes.PREFIX):].split("/") if p]
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            answer = await routes.dispatch(self.memory, tenant(scope), scope["method"], parts, query, payload)
        except NotFound as exc:
            return await send_error(send, 404, f"no conversation or item {exc.args[0]!r}", None, "not_found")
        except ValueError as exc:
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else None
            return await send_error(send, 400, str(exc), field, "invalid_value")
        except EndpointError as exc:
            return await send_error(send, 502, f"the memory model server failed: {exc}", None, "upstream_error")
        if answer is None:
            return await send_error(send, 404, f"no route {scope['method']} {scope['path']}", None, "not_found")
        await send_json(send, *answer)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        payload = json_object_or_none(body)
        if payload is None or "conversation" not in payload:
            return await self.app(scope, replay(body, receive), send)
        who = tenant(scope)
        try:
            prepared = await self.memory.prepare(who, payload)
        except NotFound as exc:
            return await send_error(send, 404, f"no conversation {exc.args[0]!r}", "conversation", "not_found")
        except ValueError as exc:
            return await send_error(send, 400, str(exc), str(exc).split(":", 1)[0], "invalid_value")
        except EndpointError as exc:
            return await send_error(send, 502, f"the memory model server failed: {exc}", None, "upstream_error")
        sent = json.dumps(prepared.payload).encode()
        captured = Captured(_with_history(send, prepared))
        await self.app(with_body(scope, sent), replay(sent, receive), captured.send)
        await self._record(who, prepared, captured, payload.get("stream") is True)

    async def _record(self, who: str, prepared: Prepared, captured: Captured, stream: bool) -> None:
        answer = captured.body
        if captured.status != 200 or answer is None:
            return  # a failed turn is not part of the conversation
        if stream:
            answer = gathered(answer, CHAT_PATH)
        try:
            text = json.loads(answer)["choices"][0]["message"]["content"] or ""
        except (TypeError, ValueError, KeyError, IndexError):
            logger.warning("conversation %s: the answer had no message; the turn is not recorded",
                           prepared.conversation_id)
            return
        try:
            await self.memory.record(who, prepared, text)
        except EndpointError as exc:
            logger.warning("conversation %s: the turn is not recorded: %s", prepared.conversation_id, exc)


def _with_history(send: Send, prepared: Prepared) -> Send:
    """The answer's headers say what history went in: its tokens, and which older turns were recalled."""
    history = prepared.history
    added = [(TOKENS_HEADER, str(history.tokens).encode()),
             (RECALLED_HEADER, ",".join(map(str, history.recalled)).encode())]

    async def tagged(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *added]}
        await send(message)

    return tagged
