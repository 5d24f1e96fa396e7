"""One HTTP/1.1 connection to a replica (an asyncio protocol feeding the httptools parser) and the answer it
carries: status and headers as soon as they are parsed, the body as it arrives, with flow control (reading pauses
while more than 64 KiB of body wait for the consumer). The pool and the failures' meaning are in client.py."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from llmfleet.gateway.client import ReplicaClient, _Origin

_HIGH_WATER = 1 << 16   # buffered body bytes above which the socket stops being read until the consumer catches up


class ReplicaError(Exception):
    """A transport failure talking to a replica."""


class ConnectError(ReplicaError):
    pass


class ReadError(ReplicaError):
    pass


class ReplicaTimeout(ReplicaError):
    pass


class ReplicaResponse:
    """One answer: `status_code` and `headers` (lower-case names) at once, the body as it arrives."""
    __slots__ = ("status_code", "headers", "_conn", "_chunks", "_buffered", "_waiter", "_done", "_error")

    def __init__(self, conn: "_Connection"):
        self.status_code, self.headers = 0, {}
        self._conn, self._chunks, self._buffered = conn, deque(), 0
        self._waiter: asyncio.Future | None = None
        self._done, self._error = False, None

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self):
        """The body's pieces as they arrive (transfer encoding undone); ends when the answer is complete."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _HIGH_WATER:
                    self._conn.resume()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout(self._conn.client.read_timeout_s):
                        await self._waiter
                except TimeoutError:
                    self.close()
                    raise ReplicaTimeout(f"no answer byte for {self._conn.client.read_timeout_s} s") from None

    def close(self) -> None:
        """Done with this answer: a connection with unread body left is closed rather than reused."""
        if not self._done:
            self._done = True
            self._conn.abandon(self)
            self._wake()

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self, error: ReplicaError | None = None) -> None:
        if not self._done:
            self._done, self._error = True, error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One socket to a replica; carries one request at a time."""

    def __init__(self, client: "ReplicaClient", origin: "_Origin"):
        self.client, self.origin = client, origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed, self.paused, self.received = False, False, False
        self.response: ReplicaResponse | None = None
        self.head: asyncio.Future | None = None

    def send(self, data: bytes) -> ReplicaResponse:
        self.response, self.received = ReplicaResponse(self), False
        self.head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.response

    # ---- asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ReadError(f"malformed answer from {self.origin.base}: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and self.head.done() and not response._done and _delimited_by_close(response):
            response._finish()
        else:
            self._fail(ReadError(f"connection to {self.origin.base} lost" + (f": {exc}" if exc else "")))
        self.origin.gone(self)

    # ---- httptools callbacks -------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status_code = self.parser.get_status_code()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(bytes(body))

    def on_message_complete(self) -> None:
        response, keep = self.response, self.parser.should_keep_alive()
        if response is None:   # abandoned while the rest was still in this read
            return
        self.response = None
        response._finish()
        self.resume()
        if keep and not self.closed:
            self.origin.put_back(self)
        else:
            self.transport.close()

    # ---- bookkeeping ---------------------------------------------------------------------------------------
    def _fail(self, error: ReplicaError) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        if self.response is not None:
            self.response._finish(error)
            self.response = None

    def abandon(self, response: ReplicaResponse) -> None:
        if self.response is not response:
            return
        if self.head is not None and not self.head.done():
            self.head.cancel()
        if self.response is not None:
            self.response = None
            self.transport.close()

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()


def _delimited_by_close(response: ReplicaResponse) -> bool:
    return "content-length" not in response.headers and "transfer-encoding" not in response.headers
