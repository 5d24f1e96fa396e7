"""TenancyMiddleware: pure ASGI, so it mounts on any ASGI app (the server, the gateway) and leaves streams alone.

It answers the admin API itself, meters completion requests (gate.py), lets any valid key through to the rest
(naming its tenant in scope["state"]["tenant"] for the apps behind: caches and conversations are kept per tenant),
and joins the app's lifespan: tenancy starts before the app's startup and closes after its shutdown completes,
so the last requests of a drain are booked before the spend writer's final flush.
"""
from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.tenancy import admin
from llmfleet.tenancy.config import TenancyConfig
from llmfleet.tenancy.errors import TenancyError, send_error
from llmfleet.tenancy.gate import serve_metered
from llmfleet.tenancy.keys import bearer_token
from llmfleet.tenancy.metering import METERED_PATHS
from llmfleet.tenancy.model_list import filtered_models
from llmfleet.tenancy.service import ADMIN, Tenancy

logger = logging.getLogger(__name__)


def without_credentials(scope: Scope) -> Scope:
    """`scope` without its Authorization header (the app behind tenancy authenticates nothing itself)."""
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]}


def tenant_of(principal) -> str:
    """Whose data a request may touch (the apps' caches and conversations): the key's team, else the key alone;
    "admin" for the master key."""
    if principal == ADMIN:
        return ADMIN
    return f"team:{principal.team_id}" if principal.team_id else f"key:{principal.key_id}"


class TenancyMiddleware:
    def __init__(self, app: ASGIApp, config: TenancyConfig, open_paths: tuple[str, ...] = (),
                 tenancy: Tenancy | None = None):
        self.app = app
        self.tenancy = tenancy or Tenancy(config)   # passed in where the console shares it (keys, spend)
        self._open = frozenset(config.open_paths) | frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http" or scope["path"] in self._open:
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._dispatch(scope, receive, tracking_send)
        except TenancyError as exc:
            if started:
                raise
            await send_error(send, exc)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = await self.tenancy.authenticate(bearer_token(scope["headers"]))
        except TenancyError:
            raise
        except Exception:  # the database is unreachable: refuse rather than let anyone in
            logger.exception("key lookup failed")
            raise TenancyError(503, "the key store is unavailable; retry shortly", "key_store_unavailable",
                               headers=[(b"retry-after", b"1")]) from None
        scope.setdefault("state", {})["tenant"] = tenant_of(principal)
        if admin.is_admin_path(scope["path"]):
            return await self._admin(principal, scope, receive, send)
        scope = without_credentials(scope)  # the tenant's key stops here: the gateway would pass it to replicas
        scope.setdefault("state", {})["principal"] = principal   # whose request it is, for the apps behind
        if principal != ADMIN and scope["method"] == "POST" and scope["path"] in METERED_PATHS:
            return await serve_metered(self.tenancy, principal, self.app, scope, receive, send)
        if principal != ADMIN and principal.models and scope["path"] == "/v1/models":
            send = filtered_models(send, principal.models)
        await self.app(scope, receive, send)

    async def _admin(self, principal, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await admin.handle(self.tenancy, principal, scope, receive, send)
        except TenancyError:
            raise
        except Exception as exc:  # answered in the envelope here too: the gateway has no server error handler
            logger.exception("admin call %s %s failed", scope["method"], scope["path"])
            raise TenancyError(500, f"internal error: {type(exc).__name__}", "internal_error") from None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.tenancy.start()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.tenancy.close()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)
