"""Calling llmfleet's server app in-process, the way uvicorn would, with the answer streamed back piece by piece.

A Ray Serve replica holds the real app (server/app.py: routes, validation, the error envelope, streaming, the
engine-core process its lifespan starts) and hands it each request as an ASGI call. The answer comes back as an
async iterator: first a `ResponseHead` (status and headers), then the body's chunks as the app sends them, so
streams are relayed token by token. Closing the iterator early (the client went away) tells the app with an
`http.disconnect`, which aborts the request in the engine.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: list[tuple[str, str]]


_END = object()


class InProcessApp:
    """An ASGI app and its lifespan state, started with `await start()` and stopped with `await stop()`."""

    def __init__(self, app: Any):
        self.app = app
        self._lifespan: contextlib.AbstractAsyncContextManager | None = None
        self.state: dict = {}

    async def start(self) -> None:
        """Run the app's lifespan start-up (for llmfleet's server: start the engine core and wait until ready)."""
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.state = dict(await self._lifespan.__aenter__() or {})

    async def stop(self) -> None:
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            await lifespan.__aexit__(None, None, None)

    async def call(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
                   query_string: bytes = b"") -> AsyncIterator[ResponseHead | bytes]:
        """The app's answer to one request: its ResponseHead, then the body chunks (empty ones left out)."""
        queue: asyncio.Queue = asyncio.Queue()
        disconnected = asyncio.Event()
        sent_body = False

        async def receive() -> dict:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                queue.put_nowait(ResponseHead(message["status"], [(k.decode("latin-1"), v.decode("latin-1"))
                                                                  for k, v in message.get("headers", [])]))
            elif message["type"] == "http.response.body" and message.get("body"):
                queue.put_nowait(bytes(message["body"]))

        task = asyncio.create_task(self._run(self._scope(method, path, headers, query_string), receive, send,
                                             queue))
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            disconnected.set()
            if not task.done():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=5.0)   # the app aborts on the disconnect, then returns

    async def _run(self, scope: dict, receive, send, queue: asyncio.Queue) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            queue.put_nowait(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            queue.put_nowait(_END)

    def _scope(self, method: str, path: str, headers: list[tuple[str, str]], query_string: bytes) -> dict:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                "query_string": query_string, "server": ("127.0.0.1", 0), "client": ("127.0.0.1", 0),
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                "state": dict(self.state)}
