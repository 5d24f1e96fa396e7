"""Graceful drain: after SIGTERM, /ready turns false, new requests get 503, in-flight ones get `timeout` seconds.

`request_drain()` may be called from a signal handler or any thread; the drain itself runs on the server's loop.
When it is done (everything finished, or the rest aborted at the timeout) `on_drained` runs: the process runner
sets it to stop uvicorn, which then closes idle connections and runs the lifespan shutdown.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from llmfleet.engine.core_client import EngineCoreClient

logger = logging.getLogger(__name__)


class Lifecycle:
    """The server's draining state, shared by the app (readiness, admission) and the process runner (signals)."""

    def __init__(self, drain_timeout: float, on_drained: Callable[[], None] | None = None):
        self.drain_timeout = drain_timeout
        self.on_drained = on_drained or (lambda: None)
        self.on_failed: Callable[[], None] = lambda: None   # the process runner stops serving (exit status 1)
        self.failure: Exception | None = None                # why the engine died, once it has
        self.draining = False
        self.drained = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requested = asyncio.Event()

    def request_drain(self) -> None:
        """Begin draining. Idempotent; safe from signal handlers and other threads."""
        self.draining = True  # a plain store: new requests see it at once
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._requested.set)

    def engine_failed(self, error: Exception) -> None:
        """The engine core died: in-flight requests already got their errors; stop serving, exit non-zero."""
        if self.failure is None:
            self.failure = error
            logger.error("the engine core died (%s): stopping the server", error)
            self.on_failed()

    async def watch(self, engine: EngineCoreClient) -> None:
        """Run for the app's life (a lifespan task): wait for a drain request, then drain `engine`."""
        self._loop = asyncio.get_running_loop()
        if self.draining:
            self._requested.set()
        await self._requested.wait()
        logger.info("draining: %d request(s) in flight, %.1f s to finish", engine.num_in_flight, self.drain_timeout)
        if not await _wait_idle(engine, self.drain_timeout):
            logger.warning("drain timeout: aborting %d request(s)", engine.num_in_flight)
            engine.abort_all()
            await _wait_idle(engine, 5.0)
        logger.info("drained")
        self.drained.set()
        self.on_drained()


async def _wait_idle(engine: EngineCoreClient, timeout: float, poll_s: float = 0.02) -> bool:
    """Wait until nothing is in flight; False if `timeout` seconds passed first."""
    deadline = time.monotonic() + timeout
    while engine.num_in_flight and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
    return engine.num_in_flight == 0
