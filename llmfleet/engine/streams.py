"""A request's outputs as an async iterator, and the errors that can end it.

The engine client delivers each request's cumulative outputs to its RequestStream on the event loop that submitted
it. Outputs are cumulative, so only the newest undelivered one is kept: a slow consumer skips snapshots, never
tokens. Closing (or cancelling a consumer blocked in `__anext__`) aborts the request in the engine.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from llmfleet.protocol.outputs import RequestOutput


class EngineDeadError(RuntimeError):
    """The engine loop crashed or was shut down; the request cannot complete."""


class RequestAbortedError(Exception):
    """The request was aborted (`abort`, `abort_all`) while its consumer was still reading it."""


class RequestObserver(Protocol):
    """Sees every request's life on the event loop, with the engine core's step times (time.monotonic). Must not
    block."""

    def on_added(self, request_id: str, arrival_time: float) -> None: ...
    def on_output(self, output: RequestOutput, step_start: float, now: float) -> None: ...
    def on_aborted(self, request_id: str, now: float) -> None: ...


class RequestStream:
    """One request's outputs as an async iterator, on the event loop that submitted it.

    Outputs are cumulative, so only the newest undelivered one is kept: a slow consumer skips snapshots, never tokens.
    Cancelling a task blocked in `__anext__` (a client that went away) aborts the request in the engine.
    """

    __slots__ = ("request_id", "loop", "_abort", "_item", "_event", "_done")

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop, abort: Callable[[str], None]):
        self.request_id, self.loop, self._abort = request_id, loop, abort
        self._item: RequestOutput | BaseException | None = None
        self._event = asyncio.Event()
        self._done = False  # the consumer has seen the last item, or closed the stream

    @staticmethod
    def deliver(items: list[tuple["RequestStream", RequestOutput | BaseException]]) -> None:
        """Runs on the streams' loop. An error, once there, is never overwritten by an output."""
        for stream, item in items:
            if not isinstance(stream._item, BaseException):
                stream._item = item
                stream._event.set()

    def __aiter__(self) -> "RequestStream":
        return self
    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        try:
            while self._item is None:
                self._event.clear()
                await self._event.wait()
        except asyncio.CancelledError:
            self.close()
            raise
        item, self._item = self._item, None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._done = item.finished
        return item

    def close(self) -> None:
        """Stop reading; aborts the request in the engine unless it finished. Idempotent."""
        if not self._done:
            self._done = True
            self._abort(self.request_id)
