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

from llmfleet.gateway.connection import (ConnectError, ReadError, ReplicaError, ReplicaResponse, ReplicaTimeout,
                                         _Connection)

__all__ = ["ConnectError", "ReadError", "ReplicaClient", "ReplicaError", "ReplicaResponse", "ReplicaTimeout"]

# Headers of one hop that a proxy never passes on (the client adds host and content-length itself).
HOP_BY_HOP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authorization", "proxy-connection", "accept-encoding"})


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
