"""The FastAPI app of one replica: routers per feature, one error envelope, pure-ASGI middleware, and a lifespan
that owns the engine (started before the first request is served, shut down after the last one)."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import shutil
import tempfile
import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from llmfleet.engine.dp_client import start_engine_client
from llmfleet.protocol.config import EngineConfig
from llmfleet.server.batches.router import router as batches_router
from llmfleet.server.batches.service import BatchService
from llmfleet.server.batches.store import BatchStore
from llmfleet.server.chat.router import router as chat_router
from llmfleet.server.completions.router import router as completions_router
from llmfleet.server.config import ServerConfig
from llmfleet.server.context import ServingContext
from llmfleet.server.embeddings.router import router as embeddings_router
from llmfleet.server.errors import install_error_handlers
from llmfleet.server.lifecycle import Lifecycle
from llmfleet.server.metrics import ServerMetrics
from llmfleet.server.responses.router import router as responses_router
from llmfleet.server.responses.store import ResponseStore
from llmfleet.server.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware, RequestIdMiddleware
from llmfleet.server.lora import router as lora_router
from llmfleet.server.system.router import router as system_router
from llmfleet.server.tokenize.router import router as tokenize_router

logger = logging.getLogger(__name__)
_LOG_LEVELS = {"critical": "CRITICAL", "error": "ERROR", "warning": "WARNING", "info": "INFO", "debug": "DEBUG",
               "trace": "DEBUG"}


def create_app(config: ServerConfig, engine_config: EngineConfig, lifecycle: Lifecycle | None = None,
               on_ready: Callable[[ServingContext], None] | None = None) -> FastAPI:
    """The server app. Its lifespan starts the engine-core process for `engine_config` (and stops it last).

    `lifecycle` carries the draining state (the process runner shares it with its signal handler); `on_ready` is
    called with the serving context once the engine is up (tests use it to reach the engine).
    """
    lifecycle = lifecycle or Lifecycle(config.drain_timeout)
    retrieval = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = await start_engine_client(engine_config, log_level=_LOG_LEVELS.get(config.log_level, "INFO"))
        engine.on_dead = lifecycle.engine_failed
        names = config.served_model_names or (engine.model_name,)
        metrics = ServerMetrics(names[0])
        engine.observer = metrics  # no request can arrive before the app starts serving
        ctx = ServingContext(config, engine, copy.deepcopy(engine.tokenizer), metrics, lifecycle, names, int(time.time()))
        watcher = asyncio.create_task(lifecycle.watch(engine))
        notices = _watch_preemption(config, lifecycle)
        logger.info("serving %s (max_model_len %d) as %s", engine.model_name, engine.max_model_len, ", ".join(names))
        batch_dir = config.batch_dir or tempfile.mkdtemp(prefix="llmfleet-batches-")
        store = await BatchStore.open(batch_dir)
        batches = await BatchService.start(store, ctx, config.batch_concurrency)
        if retrieval is not None:
            retrieval.start(store, engine.max_model_len, config.retrieval_own_model)
        if on_ready is not None:
            on_ready(ctx)
        try:
            yield {"ctx": ctx, "batches": batches, "responses": ResponseStore(config.max_stored_responses)}
        finally:
            watcher.cancel()
            if notices is not None:
                notices.cancel()
            if retrieval is not None:
                await retrieval.close()
            await batches.stop()   # unfinished batches resume on the next start (with the same batch_dir)
            await store.close()
            if config.batch_dir is None:
                shutil.rmtree(batch_dir, ignore_errors=True)
            await engine.shutdown()
            ctx.tokenizers.shutdown()

    app = FastAPI(title="llmfleet", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for router in (completions_router, chat_router, responses_router, embeddings_router, batches_router,
                   tokenize_router, system_router, lora_router):
        app.include_router(router)
    if config.retrieval is not None:   # /v1/vector_stores (llmfleet.apps.retrieval)
        from llmfleet.server.retrieval import ReplicaRetrieval

        retrieval = ReplicaRetrieval(app, config.retrieval)
    # Starlette wraps in reverse order of addition: request ids outermost, then the body limit, the console, auth,
    # then the apps (which need tenancy's verdict on whose request it is).
    tenancy = None
    if config.apps is not None:
        from llmfleet.apps.mount import mount

        mount(app, config.apps, config.tenancy.database_url if config.tenancy else None)
    if config.tenancy is not None:  # virtual keys, limits and spend, in place of the single API key
        from llmfleet.tenancy import TenancyMiddleware
        from llmfleet.tenancy.service import Tenancy

        tenancy = Tenancy(config.tenancy)
        app.add_middleware(TenancyMiddleware, config=config.tenancy,
                           open_paths=("/metrics",) if config.metrics_public else (), tenancy=tenancy)
    elif config.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, metrics_public=config.metrics_public)
    if config.console.enabled:  # outside auth: it admits admins itself (console/auth.py)
        from llmfleet.console.app import ConsoleMiddleware
        from llmfleet.server.console import ReplicaSource

        app.add_middleware(ConsoleMiddleware, source=ReplicaSource(config), config=config.console, tenancy=tenancy,
                           api_key=config.api_key)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    if config.allowed_origins:  # outermost: preflights need no key, and every answer (errors too) carries CORS
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                           allow_methods=list(config.allowed_methods), allow_headers=list(config.allowed_headers),
                           allow_credentials=config.allow_credentials)
    return app


def _watch_preemption(config: ServerConfig, lifecycle: Lifecycle) -> asyncio.Task | None:
    """With a notice URL: a task that drains the replica when the cloud announces its preemption."""
    if config.preemption_notice_url is None:
        return None
    from llmfleet.server.preemption import PreemptionWatcher

    watcher = PreemptionWatcher(config.preemption_notice_url, lifecycle, config.preemption_poll_s)
    return asyncio.create_task(watcher.run())
