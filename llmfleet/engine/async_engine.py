"""AsyncEngine: the synchronous LLMEngine driven by a thread of its own, with an asyncio face.

Threads. The engine thread builds the LLMEngine, steps it, and is the only thread that ever touches it. Others talk
to it through the inbox (adds, aborts, calls), applied between steps; with nothing to do it sleeps on an event.
Outputs go back to each request's RequestStream on the event loop that submitted it: one `call_soon_threadsafe` per
loop per step carries all of that step's outputs.

Failure. If a step raises, the engine is dead: every in-flight request fails with EngineDeadError (nobody hangs),
and later submissions fail at once with the same error.
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
from dataclasses import dataclass
from typing import Any, Protocol

from llmfleet.outputs import RequestOutput
from llmfleet.sampling_params import SamplingParams

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
        self.request_id = request_id
        self.loop = loop
        self._abort = abort
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


@dataclass(slots=True)
class _Add:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    priority: int
    arrival_time: float
    stream: RequestStream
    ack: Future  # resolved once engine.add_request ran: None, or the exception it raised


@dataclass(slots=True)
class _Abort:
    request_ids: list[str] | None  # None: every in-flight request


@dataclass(slots=True)
class _Call:
    fn: Callable[[Any], Any]
    ack: Future


class AsyncEngine:
    """An LLMEngine stepped by its own thread. Build with `AsyncEngine.start(factory)`."""

    def __init__(self, factory: Callable[[], Any], observer: RequestObserver | None, name: str):
        self._factory, self._observer = factory, observer
        self._inbox: collections.deque = collections.deque()
        self._lock = threading.Lock()   # orders the `closed` check against inbox appends
        self._wake = threading.Event()
        self._closed = self._stop = False
        self._error: EngineDeadError | None = None
        self._streams: dict[str, RequestStream] = {}  # engine thread writes; other threads only read len()
        self._unstarted: set[str] = set()             # engine thread writes: admitted, no output token yet
        self._pending_adds = 0                        # submitted, not applied yet (under _lock)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.engine: Any = None
        self.tokenizer: Any = None
        self.max_model_len = 0
        self.model_name = ""

    @classmethod
    def start(cls, factory: Callable[[], Any], observer: RequestObserver | None = None,
              name: str = "llmfleet-engine") -> "AsyncEngine":
        """Start the engine thread, run `factory()` there to build the LLMEngine, and return once it is built.

        The factory's exception, if any, is raised here. `observer` (e.g. metrics) runs on the engine thread.
        """
        self = cls(factory, observer, name)
        self._thread.start()
        self._ready.wait()
        if self.engine is None:
            raise self._error.__cause__ or self._error
        return self

    # ------------------------------------------------------------------------------------------- caller side
    async def add_request(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
                          priority: int = 0) -> RequestStream:
        """Submit a request and return its stream once the engine accepted it.

        Raises what engine.add_request raised (ValueError naming the field), or EngineDeadError.
        """
        request_id = request_id or uuid.uuid4().hex
        stream = RequestStream(request_id, asyncio.get_running_loop(), self.abort)
        ack = Future()
        self._submit(_Add(request_id, prompt, params, priority, time.monotonic(), stream, ack), is_add=True)
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
        self._submit(_Abort([request_ids] if isinstance(request_ids, str) else list(request_ids)))

    def abort_all(self) -> None:
        """Abort every in-flight request; consumers still reading get RequestAbortedError."""
        self._submit(_Abort(None))

    def call(self, fn: Callable[[Any], Any]) -> Future:
        """Run `fn(engine)` on the engine thread between steps; the future gets its result or exception."""
        ack = Future()
        self._submit(_Call(fn, ack))
        return ack

    async def stats(self) -> Any:
        """The engine's EngineStats, read on the engine thread between steps."""
        return await asyncio.wrap_future(self.call(lambda engine: engine.stats()))

    @property
    def num_in_flight(self) -> int:
        """Requests submitted and not finished."""
        return self._pending_adds + len(self._streams)

    @property
    def num_waiting(self) -> int:
        """Requests submitted without an output token yet. Never undercounts (may count one twice, briefly)."""
        return self._pending_adds + len(self._unstarted)

    @property
    def error(self) -> EngineDeadError | None:
        """Why the engine is dead, or None while it runs."""
        return self._error

    async def wait_idle(self, timeout: float, poll_s: float = 0.02) -> bool:
        """Wait until nothing is in flight; False if `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        while self.num_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return self.num_in_flight == 0

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop after the current step; in-flight requests fail with EngineDeadError. Idempotent."""
        self._stop = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _submit(self, command, is_add: bool = False) -> None:
        with self._lock:
            if self._closed:
                if isinstance(command, _Abort):
                    return
                raise self._error or EngineDeadError("the engine is shut down")
            self._pending_adds += is_add
            self._inbox.append(command)
        self._wake.set()

    # ------------------------------------------------------------------------------------------- engine thread
    def _run(self) -> None:
        try:
            self.engine = self._factory()
            self.tokenizer, self.model_name = self.engine.tokenizer, self.engine.model_name
            self.max_model_len = self.engine.max_model_len
        except BaseException as exc:  # noqa: BLE001 - start() re-raises it in the caller's thread
            self.engine = None
            self._error = EngineDeadError(f"the engine failed to start: {type(exc).__name__}: {exc}")
            self._error.__cause__ = exc
            self._close(self._error)
            return
        finally:
            self._ready.set()
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the engine is dead; every waiter must learn it
            logger.exception("engine loop crashed; failing every in-flight request")
            self._error = EngineDeadError(f"the engine failed: {type(exc).__name__}: {exc}")
        self._close(self._error or EngineDeadError("the engine is shut down"))

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
            command = self._inbox.popleft()
            if isinstance(command, _Abort):
                self._apply_abort(command.request_ids)
                continue
            try:
                if command.ack.set_running_or_notify_cancel():  # False: the caller cancelled first
                    self._apply(command)
            finally:
                if isinstance(command, _Add):
                    with self._lock:
                        self._pending_adds -= 1

    def _apply(self, command: _Add | _Call) -> None:
        try:
            if isinstance(command, _Call):
                command.ack.set_result(command.fn(self.engine))
                return
            self.engine.add_request(command.request_id, command.prompt, command.params, priority=command.priority)
        except Exception as exc:  # noqa: BLE001 - a rejected request or failed call; the engine goes on
            command.ack.set_exception(exc)
            return
        self._streams[command.request_id] = command.stream
        self._unstarted.add(command.request_id)
        self._notify("on_added", command.request_id, command.arrival_time)
        command.ack.set_result(None)

    def _apply_abort(self, request_ids: list[str] | None) -> None:
        ids = [r for r in (list(self._streams) if request_ids is None else request_ids) if r in self._streams]
        if not ids:
            return
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
                    self._apply_abort([stream.request_id for stream, _ in batch])

    def _notify(self, method: str, *args) -> None:
        if self._observer is not None:
            try:
                getattr(self._observer, method)(*args)
            except Exception:  # noqa: BLE001 - metrics must never take the engine down
                logger.exception("request observer %s failed", method)

    def _close(self, error: EngineDeadError) -> None:
        """Refuse new work, then fail everything still waiting: inbox commands and in-flight streams."""
        with self._lock:
            self._closed = True
            pending, self._pending_adds = list(self._inbox), 0
            self._inbox.clear()
        for command in pending:
            if not isinstance(command, _Abort) and command.ack.set_running_or_notify_cancel():
                command.ack.set_exception(error)
        items = [(stream, error) for stream in self._streams.values()]
        self._streams.clear()
        self._unstarted.clear()
        self._deliver(items)
