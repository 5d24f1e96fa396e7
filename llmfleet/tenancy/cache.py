"""The key cache: an LRU of key records (and of unknown hashes, briefly) in front of the database.

Entries live `ttl` seconds; an update or delete drops the entry at once here and, with Redis, on every gateway
through a pub/sub channel. Bounded, so memory stays flat however many keys are tried.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from llmfleet.tenancy.records import KeyRecord

logger = logging.getLogger(__name__)
_MISSING = object()
NEGATIVE_TTL_S = 1.0  # unknown hashes are remembered this long, so a flood of wrong keys spares the database


class KeyCache:
    def __init__(self, load: Callable[[str], Awaitable[KeyRecord | None]], ttl: float, max_entries: int):
        self._load, self._ttl, self._max = load, ttl, max_entries
        self._entries: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()

    async def get(self, key_hash: str) -> KeyRecord | None:
        found = self.cached(key_hash)
        if found is not _MISSING:
            return found
        record = await self._load(key_hash)
        ttl = self._ttl if record is not None else min(self._ttl, NEGATIVE_TTL_S)
        self._put(key_hash, record, ttl)
        return record

    def cached(self, key_hash: str):
        """The cached record (None for a known-unknown hash), or _MISSING."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return _MISSING
        if entry[0] < time.monotonic():
            del self._entries[key_hash]
            return _MISSING
        self._entries.move_to_end(key_hash)
        return entry[1]

    def invalidate(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, key_hash: str, record: KeyRecord | None, ttl: float) -> None:
        self._entries[key_hash] = (time.monotonic() + ttl, record)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class RedisInvalidation:
    """Publishes invalidated key hashes on `channel` and drops those others publish from the local cache."""

    def __init__(self, redis, channel: str, cache: KeyCache):
        self._redis, self._channel, self._cache = redis, channel, cache
        self._pubsub = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen())

    async def publish(self, key_hash: str) -> None:
        self._cache.invalidate(key_hash)
        await self._redis.publish(self._channel, key_hash)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self._cache.invalidate(data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception:  # a dropped connection: the TTL still bounds staleness; resubscribe
                logger.warning("key-cache invalidation channel lost; resubscribing", exc_info=True)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(self._channel)
