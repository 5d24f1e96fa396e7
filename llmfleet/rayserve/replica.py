"""One engine replica of a model version: llmfleet's own server app and engine core, inside a Ray Serve replica.

The app (server/app.py) runs in-process (asgi.py): its lifespan starts the engine-core process, and each request
goes through the same routes, validation, admission (429 when the queue is full) and streaming as under
`llmfleet serve`. Ray Serve reads three hooks of this class: `check_health` (a dead engine core fails it, so the
controller replaces the replica), `record_autoscaling_stats` (the engine's own load for autoscaling.py) and
`__del__` (stops the engine once Ray has let the replica's ongoing requests finish).

Plain Python: app.py wraps it with `serve.deployment`, so importing it needs no Ray.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from llmfleet.protocol.config import EngineConfig
from llmfleet.rayserve.asgi import InProcessApp, ResponseHead
from llmfleet.rayserve.request import EngineRequest
from llmfleet.server.config import ServerConfig

logger = logging.getLogger(__name__)
# the custom metrics this replica reports to Ray Serve's autoscaler (autoscaling.py reads them by these names)
WAITING, RUNNING, KV_USAGE = "waiting_requests", "running_requests", "kv_usage"


class EngineReplica:
    async def __init__(self, engine: EngineConfig, server: ServerConfig):
        from llmfleet.server.app import create_app

        self.app = InProcessApp(create_app(server, engine))
        await self.app.start()
        self.ctx = self.app.state["ctx"]
        logger.info("replica of %s ready (engine core pid %s)", self.ctx.model_names[0], self.ctx.engine.pid)

    async def __call__(self, request: EngineRequest) -> AsyncIterator[ResponseHead | bytes]:
        """The server app's answer: a ResponseHead, then the body's chunks (SSE events when streaming)."""
        async for piece in self.app.call(request.method, request.path, request.headers, request.body):
            yield piece

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Sequences waiting for their first token, sequences running, and the KV cache's used fraction."""
        stats = await self.ctx.engine.stats()
        waiting = max(stats.num_waiting, self.ctx.num_waiting_sequences)
        return {WAITING: float(waiting), RUNNING: float(stats.num_running), KV_USAGE: float(stats.kv_cache_usage)}

    def check_health(self) -> None:
        if self.ctx.engine.error is not None:
            raise RuntimeError(f"the engine core is dead: {self.ctx.engine.error}")

    async def __del__(self) -> None:
        await self.app.stop()
