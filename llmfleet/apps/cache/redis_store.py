"""Sharing the cache across gateways through Redis. Answers live in Redis (expiring with their TTL); every gateway
keeps the vectors of all entries in its own in-process index (loaded at start, then kept current by a pub/sub
channel of puts and deletes), so a semantic search is still one local matrix product and only a hit's answer is
fetched from Redis. Keys: <prefix>:scache:{b,v,e}:..., the channel <prefix>:scache:events."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time

import numpy as np

from llmfleet.apps.cache.guard import Signature
from llmfleet.apps.cache.store import Entry, MemoryStore

logger = logging.getLogger(__name__)


def _signature(data: list | None) -> Signature | None:
    if data is None:
        return None
    numbers, negations, names, polar = data
    return Signature(tuple(numbers), negations, tuple(names), tuple((k, v) for k, v in polar))


class RedisMirror:
    def __init__(self, url: str, prefix: str, store: MemoryStore):
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._prefix, self._store = f"{prefix}:scache", store
        self._listener: asyncio.Task | None = None
        self._pubsub = None

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    def _exact_key(self, tenant: str, exact: str) -> str:
        return self._key("e", hashlib.sha256(f"{tenant}\x00{exact}".encode()).hexdigest())

    async def start(self) -> None:
        await self._redis.ping()
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(f"{self._prefix}:events")
        async for key in self._redis.scan_iter(match=self._key("v", "*"), count=500):
            await self._load(key.decode().rsplit(":", 1)[1])
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._redis.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                event = json.loads(message["data"])
                if event["op"] == "put":
                    await self._load(event["id"])
                else:
                    self._store.remove(event["id"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection: retried; entries still expire by their TTL
                logger.warning("semantic cache: Redis events: %s", exc)
                await asyncio.sleep(1.0)

    async def _load(self, entry_id: str) -> Entry | None:
        """Mirror one entry's vector and key locally (its answer stays in Redis until a hit needs it)."""
        if self._store.get_any(entry_id) is not None:
            return self._store.get_any(entry_id)
        fields = await self._redis.hgetall(self._key("v", entry_id))
        if not fields:
            return None
        meta = json.loads(fields[b"meta"])
        if meta["expires_at"] <= time.time():
            return None
        vector = np.frombuffer(fields[b"vector"], dtype=np.float32).copy() if fields.get(b"vector") else None
        entry = Entry(entry_id, meta["tenant"], meta["exact"], None, meta["expires_at"], meta["namespace"],
                      _signature(meta["signature"]), vector)
        self._store.put(entry)
        return entry

    async def exact(self, tenant: str, exact: str) -> Entry | None:
        entry_id = await self._redis.get(self._exact_key(tenant, exact))
        if entry_id is None:
            return None
        entry = await self._load(entry_id.decode())
        return entry if entry is not None and await self.fill(entry) else None

    async def fill(self, entry: Entry) -> bool:
        """Fetch the entry's answer if this process lacks it; False (and dropped) when Redis no longer has it."""
        if entry.body is not None:
            return True
        body = await self._redis.get(self._key("b", entry.entry_id))
        if body is None:
            self._store.remove(entry.entry_id)
            return False
        entry.body = body
        return True

    async def publish(self, entry: Entry, ttl_s: float) -> None:
        signature = entry.signature
        meta = {"tenant": entry.tenant, "exact": entry.exact, "namespace": entry.namespace,
                "expires_at": entry.expires_at,
                "signature": None if signature is None else [list(signature.numbers), signature.negations,
                                                             list(signature.names), list(signature.polar)]}
        mapping = {"meta": json.dumps(meta)}
        if entry.vector is not None:
            mapping["vector"] = entry.vector.astype(np.float32).tobytes()
        ttl = max(1, int(ttl_s))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("b", entry.entry_id), entry.body, ex=ttl)
            pipe.hset(self._key("v", entry.entry_id), mapping=mapping)
            pipe.expire(self._key("v", entry.entry_id), ttl)
            pipe.set(self._exact_key(entry.tenant, entry.exact), entry.entry_id, ex=ttl)
            pipe.publish(f"{self._prefix}:events", json.dumps({"op": "put", "id": entry.entry_id}))
            await pipe.execute()

    async def forget(self, entry: Entry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("b", entry.entry_id), self._key("v", entry.entry_id))
            pipe.delete(self._exact_key(entry.tenant, entry.exact))
            pipe.publish(f"{self._prefix}:events", json.dumps({"op": "del", "id": entry.entry_id}))
            await pipe.execute()
