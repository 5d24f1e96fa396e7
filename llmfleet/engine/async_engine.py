"""AsyncEngine: the synchronous LLMEngine driven by a thread of its own, with an asyncio face.

The engine thread builds the LLMEngine, steps it, and is the only thread that ever touches it. Others talk to it
through the inbox (adds, aborts, calls), applied between steps; with nothing to do it sleeps on an event. Outputs go
back to each request's RequestStream on the loop that submitted it: one `call_soon_threadsafe` per loop per step.
If a step raises, the engine is dead: every in-flight request fails with EngineDeadError (nobody hangs), and later
submissions fail at once with the same error.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from llmfleet.protocol.outputs import RequestOutput
from llmfleet.protocol.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
Future = concurrent.futures.Future


class EngineDeadError(RuntimeError):
    """The engine loop crashed or was shut down; the request cannot complete."""


class RequestAbortedError(Exception):
    """The request was aborted (`abort`, `abort_all`) while its consumer was still reading it."""


class RequestObserver(Protocol):
    """Sees every request's life on the engine thread, with the engine's times (time.monotonic). Must not block."""

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


class AsyncEngine:
    """An LLMEngine stepped by its own thread. Build with `AsyncEngine.start(factory)`."""
    def __init__(self, factory: Callable[[], Any], observer: RequestObserver | None, name: str):
        self._factory = factory
        self.observer = observer        # may be attached after start(); read by the engine thread on each event
        self._inbox: collections.deque = collections.deque()
        self._lock = threading.Lock()   # orders the `closed` check against inbox appends
        self._wake = threading.Event()
        self._closed = self._stop = False            # _closed: no more submissions; _stop: asked to shut down
        self.error: EngineDeadError | None = None    # why the engine is dead; None while it runs
        self._streams: dict[str, RequestStream] = {}  # engine thread writes; other threads only read len()
        self._unstarted: set[str] = set()             # engine thread writes: admitted, no output token yet
        self._pending_adds = 0                        # submitted, not applied yet (under _lock)
        self._built: Future = Future()              # the factory's outcome, for start()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.engine: Any = None      # below: set on the engine thread before start() returns
        self.tokenizer: Any = None
        self.max_model_len, self.model_name = 0, ""

    @classmethod
    def start(cls, factory: Callable[[], Any], observer: RequestObserver | None = None,
              name: str = "llmfleet-engine") -> "AsyncEngine":
        """Start the engine thread, build the LLMEngine there with `factory()` (its exception is raised here), and
        return once it is built. `observer` (e.g. metrics) is called on the engine thread."""
        self = cls(factory, observer, name)
        self._thread.start()
        self._built.result()
        return self

    async def add_request(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
                          priority: int = 0) -> RequestStream:
        """Submit a request; return its stream once the engine accepted it. Raises what engine.add_request raised
        (ValueError naming the field), or EngineDeadError."""
        request_id = request_id or uuid.uuid4().hex
        stream = RequestStream(request_id, asyncio.get_running_loop(), self.abort)
        ack, arrival = Future(), time.monotonic()
        self._submit(lambda: self._admit(request_id, prompt, params, priority, arrival, stream), ack, is_add=True)
        try:
            await asyncio.wrap_future(ack)
        except asyncio.CancelledError:
            self.abort(request_id)  # it may have been admitted just before the caller went away
            raise
        return stream

    async def generate(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
                       priority: int = 0) -> AsyncIterator[RequestOutput]:
        """Yield the request's cumulative outputs until it finishes. Closing or cancelling the consumer aborts it."""
        stream = await self.add_request(prompt, params, request_id, priority)
        try:
            async for output in stream:
                yield output
        finally:
            stream.close()

    def abort(self, request_ids: str | list[str]) -> None:
        """Abort requests; unknown or finished ids are ignored. Any thread; returns at once."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        self._submit(lambda: self._abort(ids), None)

    def abort_all(self) -> None:
        """Abort every in-flight request; consumers still reading get RequestAbortedError."""
        self._submit(lambda: self._abort(list(self._streams)), None)

    def call(self, fn: Callable[[Any], Any]) -> Future:
        """Run `fn(engine)` on the engine thread between steps; the future gets its result or exception."""
        ack = Future()
        self._submit(lambda: fn(self.engine), ack)
        return ack

    async def stats(self) -> Any:
        """The engine's EngineStats, read on the engine thread between steps."""
        return await asyncio.wrap_future(self.call(lambda engine: engine.stats()))

    @property
    def num_in_flight(self) -> int:  # requests submitted and not finished
        return self._pending_adds + len(self._streams)

    @property
    def num_waiting(self) -> int:  # submitted, no output token yet; never undercounts (may count one twice, briefly)
        return self._pending_adds + len(self._unstarted)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop after the current step; in-flight requests fail with EngineDeadError. Idempotent."""
        self._stop = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _submit(self, fn: Callable[[], Any], ack: Future | None, is_add: bool = False) -> None:
        # Queue fn for the engine thread; ack (None: fire and forget) gets its result or exception.
        with self._lock:
            if self._closed:
                if ack is None:
                    return
                raise self.error or EngineDeadError("the engine is shut down")
            self._pending_adds += is_add
            self._inbox.append((fn, ack, is_add))
        self._wake.set()

    def _run(self) -> None:  # this and everything below run on the engine thread
        try:
            self.engine = self._factory()
            self.tokenizer, self.model_name = self.engine.tokenizer, self.engine.model_name
            self.max_model_len = self.engine.max_model_len
        except BaseException as exc:  # noqa: BLE001 - start() re-raises it in the caller's thread
            self.error = EngineDeadError(f"the engine failed to start: {exc!r}")
            self._close(self.error)
            return self._built.set_exception(exc)
        self._built.set_result(None)
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the engine is dead; every waiter must learn it
            logger.exception("engine loop crashed; failing every in-flight request")
            self.error = EngineDeadError(f"the engine failed: {type(exc).__name__}: {exc}")
        self._close(self.error or EngineDeadError("the engine is shut down"))

    def _loop(self) -> None:
        while not self._stop:
            self._apply_inbox()
            if self._stop:
                return
            if not self.engine.has_unfinished_requests():
                self._wake.wait()   # set by every submit; cleared before the inbox is read again
                self._wake.clear()
                continue
            step_start = time.monotonic()
            outputs = self.engine.step()
            self._dispatch(outputs, step_start, time.monotonic())

    def _apply_inbox(self) -> None:
        while self._inbox:
            fn, ack, is_add = self._inbox.popleft()
            try:
                if ack is None:
                    fn()
                elif ack.set_running_or_notify_cancel():  # False: the caller cancelled first
                    try:
                        ack.set_result(fn())
                    except Exception as exc:  # noqa: BLE001 - a rejected request or failed call; the engine goes on
                        ack.set_exception(exc)
            finally:
                if is_add:
                    with self._lock:
                        self._pending_adds -= 1

    def _admit(self, request_id: str, prompt, params: SamplingParams, priority: int, arrival: float,
               stream: RequestStream) -> None:
        self.engine.add_request(request_id, prompt, params, priority=priority)  # raises ValueError when invalid
        self._streams[request_id] = stream
        self._unstarted.add(request_id)
        self._notify("on_added", request_id, arrival)

    def _abort(self, request_ids: list[str]) -> None:
        ids = [r for r in request_ids if r in self._streams]
        if ids:
            self.engine.abort_request(ids)
        now, items = time.monotonic(), []
        for request_id in ids:
            self._unstarted.discard(request_id)
            self._notify("on_aborted", request_id, now)
            items.append((self._streams.pop(request_id), RequestAbortedError(f"request {request_id} was aborted")))
        self._deliver(items)

    def _dispatch(self, outputs: list[RequestOutput], step_start: float, now: float) -> None:
        items = []
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is None:
                continue
            if output.finished:
                del self._streams[output.request_id]
            if output.finished or any(c.token_ids for c in output.outputs):
                self._unstarted.discard(output.request_id)
            self._notify("on_output", output, step_start, now)
            items.append((stream, output))
        self._deliver(items)

    def _deliver(self, items: list[tuple[RequestStream, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream, item in items:
            by_loop.setdefault(stream.loop, []).append((stream, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(RequestStream.deliver, batch)
            except RuntimeError:  # the consumer's loop is closed: nobody will read these
                if not self._closed:
                    self._abort([stream.request_id for stream, _ in batch])

    def _notify(self, method: str, *args) -> None:
        try:
            if self.observer is not None:
                getattr(self.observer, method)(*args)
        except Exception:  # noqa: BLE001 - metrics must never take the engine down
            logger.exception("request observer %s failed", method)

    def _close(self, error: EngineDeadError) -> None:
        """Refuse new work, then fail everything still waiting: inbox commands and in-flight streams."""
        with self._lock:
            self._closed = True
            pending, self._pending_adds = list(self._inbox), 0
            self._inbox.clear()
        for _, ack, _ in pending:
            if ack is not None and ack.set_running_or_notify_cancel():
                ack.set_exception(error)
        items = [(stream, error) for stream in self._streams.values()]
        self._streams.clear()
        self._unstarted.clear()
        self._deliver(items)
