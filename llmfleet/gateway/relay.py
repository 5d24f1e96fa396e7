"""A streamed answer relayed to the client as a plain ASGI app, and the release of what it holds upstream.

Lighter than a framework streaming response (no task group per stream): one watcher task waits for the client's
disconnect and, when it comes, releases the upstream answer at once, so the replica's connection is closed (the
replica aborts the request) and the relay's next read ends instead of waiting for the replica's next token.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from llmfleet.gateway.client import ReplicaResponse
from llmfleet.gateway.replica import Replica


class Release:
    """Closes the upstream answer and frees the replica's in-flight slot exactly once: when the relay ends, when
    the client leaves, or when the response is abandoned before the relay ever ran."""
    __slots__ = ("rep", "upstream", "done")

    def __init__(self, rep: Replica, upstream: ReplicaResponse):
        self.rep, self.upstream, self.done = rep, upstream, False

    def __call__(self, *_) -> None:
        if not self.done:
            self.done = True
            self.rep.in_flight -= 1
            self.upstream.close()


class RelayResponse:
    """`body`'s chunks sent as they come, status and headers first."""
    __slots__ = ("status_code", "raw_headers", "body", "release")

    def __init__(self, status_code: int, headers: dict[str, str], body: AsyncIterator[bytes], release: Release):
        self.status_code, self.body, self.release = status_code, body, release
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(self.release)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body:
                if watcher.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await self.body.aclose()
            self.release()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
