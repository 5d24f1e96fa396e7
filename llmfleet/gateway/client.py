"""The gateway's HTTP/1.1 client for replica traffic: an asyncio protocol around the httptools parser.

One keep-alive pool per replica origin: a request takes an idle connection (or opens one, up to `max_connections`
per origin; beyond that it waits for one to come back), writes its head and body at once, and gets a
`ReplicaResponse` as soon as the status line and headers are in. The body is then read whole (`read()`) or relayed
chunk by chunk as it arrives (`chunks()`); the connection returns to the pool when the answer is complete and the
replica keeps it alive, and is closed when the answer is abandoned half-way (`close()`).

Failures are `ReplicaError`s: `ConnectError` (no connection within `connect_timeout_s`), `ReadError` (connection
lost, malformed answer), `ReplicaTimeout` (no byte for `read_timeout_s`). A reused connection that the replica had
closed meanwhile (its keep-alive timer) is detected before any answer byte arrives, and the request is sent once
more on a fresh connection. `https://` origins use TLS: `verify` is True (system CAs), False, or a CA bundle path.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

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


class _Origin:
    """The pool of one scheme://host:port."""

    def __init__(self, client: "ReplicaClient", base: str):
        parts = urlsplit(base)
        self.client, self.base = client, base
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.encode("latin-1")
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> tuple[_Connection, bool]:
        """An idle connection (reused: True) or a new one."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn, True
        while self.open >= self.client.max_connections:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter
            if self.idle:
                return await self.acquire()
        self.open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self.client.ssl_context() if self.tls else None
        try:
            async with asyncio.timeout(self.client.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Connection(self.client, self), self.host, self.port,
                                                       ssl=context)
        except TimeoutError:
            raise ConnectError(f"no connection to {self.base} within {self.client.connect_timeout_s} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.base}: {exc}") from None
        return conn

    def put_back(self, conn: _Connection) -> None:
        self.idle.append(conn)
        self._wake_one()

    def gone(self, conn: _Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self.idle):
            conn.transport.close()


class ReplicaClient:
    """Pooled keep-alive HTTP/1.1 to replicas. `send` returns once the answer's headers are in."""

    def __init__(self, connect_timeout_s: float = 2.0, read_timeout_s: float = 600.0, max_connections: int = 1000,
                 verify: bool | str = True):
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.max_connections, self.verify = max_connections, verify
        self._origins: dict[str, _Origin] = {}
        self._ssl: ssl.SSLContext | None = None

    async def send(self, method: str, base: str, path: str, body: bytes = b"", headers: dict | None = None,
                   timeout_s: float | None = None) -> ReplicaResponse:
        """`method base+path` with `body`; `headers` are sent as given (host and content-length are added)."""
        origin = self._origins.get(base) or self._origins.setdefault(base, _Origin(self, base))
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        data = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
            method.encode(), path.encode("latin-1"), origin.host_header, len(body), lines.encode("latin-1"), body)
        for _ in range(2):
            conn, reused = await origin.acquire()
            response = conn.send(data)
            try:
                async with asyncio.timeout(timeout_s or self.read_timeout_s):
                    await conn.head
            except ReadError:
                if reused and not conn.received:
                    continue   # the replica had closed this idle connection: once more on a fresh one
                raise
            except TimeoutError:
                response.close()
                raise ReplicaTimeout(f"{base}{path}: no answer within {timeout_s or self.read_timeout_s} s") from None
            return response
        raise ReadError(f"connection to {base} lost before any answer")

    async def get(self, base: str, path: str, timeout_s: float | None = None) -> tuple[int, bytes]:
        """A whole GET: (status, body)."""
        response = await self.send("GET", base, path, timeout_s=timeout_s)
        try:
            async with asyncio.timeout(timeout_s or self.read_timeout_s):
                return response.status_code, await response.read()
        except TimeoutError:
            response.close()
            raise ReplicaTimeout(f"{base}{path}: body not complete within {timeout_s} s") from None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if self.verify is False:
                self._ssl = ssl.create_default_context()
                self._ssl.check_hostname, self._ssl.verify_mode = False, ssl.CERT_NONE
            else:
                self._ssl = ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)
        return self._ssl

    async def aclose(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
