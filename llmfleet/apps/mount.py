"""Mounting the apps on an ASGI app (the replica server, the gateway): inside tenancy, so that every request
reaching them has its tenant named. Conversations wrap the cache: a conversation's expanded prompt is what the
cache sees, and a cached answer is still recorded as the conversation's next turn."""
from __future__ import annotations

from llmfleet.apps.config import AppsConfig


def mount(app, config: AppsConfig, database_url: str | None = None) -> None:
    """Add the configured apps' middleware to a Starlette/FastAPI `app`; call it before tenancy is added (the
    middleware added last runs first). `database_url`: the tenancy database, where conversations go by default."""
    if config.cache is not None:
        from llmfleet.apps.cache.middleware import CacheMiddleware

        app.add_middleware(CacheMiddleware, config=config.cache)
    if config.memory is not None:
        from llmfleet.apps.memory.middleware import ConversationMiddleware

        app.add_middleware(ConversationMiddleware, config=config.memory, database_url=database_url)
