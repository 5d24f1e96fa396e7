"""The semantic cache: an exact lookup first, then the nearest stored prompt of the same tenant and namespace by
embedding similarity, over the threshold and through the near-miss guard. Embeddings come from an
OpenAI-compatible /v1/embeddings; where that fails the cache degrades to exact matching (never to an error)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from llmfleet.apps.cache.config import CacheConfig
from llmfleet.apps.cache.guard import signature
from llmfleet.apps.cache.keys import CacheKeys
from llmfleet.apps.cache.metrics import CacheMetrics
from llmfleet.apps.cache.store import Entry, MemoryStore
from llmfleet.apps.endpoint import Endpoint, EndpointError

logger = logging.getLogger(__name__)
HIT_EXACT, HIT_SEMANTIC, MISS = "hit-exact", "hit-semantic", "miss"


@dataclass(slots=True)
class Lookup:
    result: str                       # HIT_EXACT, HIT_SEMANTIC or MISS
    entry: Entry | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None  # the embedded text's vector (kept to store the answer of a miss)


class SemanticCache:
    def __init__(self, config: CacheConfig, metrics: CacheMetrics | None = None):
        self.config = config
        self.metrics = metrics or CacheMetrics()
        self.store = MemoryStore(config.max_entries)
        self.endpoint: Endpoint | None = None
        self.shared = None  # the Redis mirror (redis_store.py), when configured

    async def start(self) -> None:
        if self.config.embedding_url:
            self.endpoint = Endpoint(self.config.embedding_url, self.config.api_key)
        if self.config.redis_url:
            from llmfleet.apps.cache.redis_store import RedisMirror

            self.shared = RedisMirror(self.config.redis_url, self.config.redis_prefix, self.store)
            await self.shared.start()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
        if self.endpoint is not None:
            await self.endpoint.close()

    async def embed(self, text: str) -> np.ndarray | None:
        """The text's unit vector; None when there is no embedding endpoint or it failed."""
        if self.endpoint is None:
            return None
        started = time.perf_counter()
        try:
            vectors = await self.endpoint.embed(self.config.embedding_model, [text])
        except EndpointError as exc:
            logger.warning("semantic cache: embedding failed, exact matching only: %s", exc)
            return None
        self.metrics.embed_seconds.observe(time.perf_counter() - started)
        return vectors[0]

    async def lookup(self, tenant: str, keys: CacheKeys) -> Lookup:
        """The tenant's cached answer to the request, if any: exact first, then semantic."""
        now = time.time()
        started = time.perf_counter()
        entry = self.store.exact(tenant, keys.exact, now)
        if self.shared is not None:
            entry = await self.shared.exact(tenant, keys.exact) if entry is None else (
                entry if await self.shared.fill(entry) else None)
        self.metrics.lookup_seconds.labels("exact").observe(time.perf_counter() - started)
        if entry is not None:
            return self._count(Lookup(HIT_EXACT, entry, 1.0))
        if keys.namespace is None or keys.text is None:
            return self._count(Lookup(MISS))
        vector = await self.embed(keys.text)
        if vector is None:
            return self._count(Lookup(MISS))
        return self._count(await self.nearest(tenant, keys, vector, now))

    async def nearest(self, tenant: str, keys: CacheKeys, vector: np.ndarray, now: float) -> Lookup:
        """The semantic step alone (the benchmark times it): the best guarded match over the threshold."""
        started = time.perf_counter()
        wanted = signature(keys.text) if self.config.guard else None
        for similarity, entry in self.store.similar(tenant, keys.namespace, vector, self.config.threshold, now):
            if wanted is None or wanted.agrees(entry.signature):
                if self.shared is not None and not await self.shared.fill(entry):
                    continue  # expired in Redis (another gateway's TTL view): not served
                self.metrics.lookup_seconds.labels("semantic").observe(time.perf_counter() - started)
                return Lookup(HIT_SEMANTIC, entry, similarity, vector)
            self.metrics.guarded.inc()
        self.metrics.lookup_seconds.labels("semantic").observe(time.perf_counter() - started)
        return Lookup(MISS, vector=vector)

    async def put(self, tenant: str, keys: CacheKeys, body: bytes, vector: np.ndarray | None) -> Entry | None:
        """Store the answer to a missed request (None when it is too large to keep)."""
        if len(body) > self.config.max_entry_bytes:
            self.metrics.skipped.labels("too_large").inc()
            return None
        semantic = vector is not None and keys.namespace is not None and keys.text is not None
        entry = Entry(self.store.new_id(), tenant, keys.exact, body, time.time() + self.config.ttl_s,
                      keys.namespace if semantic else None, signature(keys.text) if semantic else None,
                      vector if semantic else None)
        self.store.put(entry)
        if self.shared is not None:
            await self.shared.publish(entry, self.config.ttl_s)
        self.metrics.stored.inc()
        self.metrics.entries.set(len(self.store))
        return entry

    async def forget(self, tenant: str, entry_id: str, false_hit: bool) -> bool:
        """Drop one of the tenant's entries (a client reporting a wrong answer); whether it was there."""
        entry = self.store.get(tenant, entry_id)
        if entry is None:
            return False
        self.store.remove(entry_id)
        if self.shared is not None:
            await self.shared.forget(entry)
        if false_hit:
            self.metrics.false_hits.labels("semantic" if entry.namespace else "exact").inc()
        self.metrics.entries.set(len(self.store))
        return True

    def _count(self, lookup: Lookup) -> Lookup:
        self.metrics.lookups.labels(lookup.result).inc()
        return lookup
