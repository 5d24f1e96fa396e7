"""The cache's in-process store: entries by exact key, and per (tenant, namespace) a matrix of the embedded texts'
unit vectors searched by one matrix-vector product. Bounded by entry count (least recently used out first) and by
each entry's TTL. Tenants never share a bucket: the tenant is part of every key."""
from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from llmfleet.apps.cache.guard import Signature

_TOP = 4  # candidates over the threshold checked against the guard, best first


@dataclass(slots=True)
class Entry:
    entry_id: str
    tenant: str
    exact: str
    body: bytes | None               # the answer as first served (chat.completion / text_completion JSON);
    #                                  None: held in Redis only, fetched on a hit
    expires_at: float
    namespace: str | None = None
    signature: Signature | None = None
    vector: np.ndarray | None = field(default=None, repr=False)


class _Bucket:
    """The vectors of one tenant's namespace: rows [0, size) of `vectors`, row i belonging to ids[i]."""

    def __init__(self, dim: int):
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.ids: list[str] = []
        self._rows: dict[str, int] = {}

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        if len(self.ids) == len(self.vectors):
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[len(self.ids)] = vector
        self._rows[entry_id] = len(self.ids)
        self.ids.append(entry_id)

    def remove(self, entry_id: str) -> None:
        row, last = self._rows.pop(entry_id), len(self.ids) - 1
        if row != last:  # the last row fills the gap
            self.vectors[row], self.ids[row] = self.vectors[last], self.ids[last]
            self._rows[self.ids[row]] = row
        self.ids.pop()

    def nearest(self, vector: np.ndarray, threshold: float) -> list[tuple[float, str]]:
        """(similarity, id) of the best rows at or over `threshold`, best first."""
        # einsum's own loop, not BLAS: a matrix-vector product this small is fastest on one thread, and a
        # threaded BLAS under a busy machine's contention is tens of times slower
        scores = np.einsum("ij,j->i", self.vectors[:len(self.ids)], vector)
        top = np.argpartition(-scores, _TOP)[:_TOP] if len(scores) > _TOP else np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        return [(float(scores[i]), self.ids[i]) for i in top if scores[i] >= threshold]


class MemoryStore:
    """Every entry of every tenant in this process, at most `max_entries` of them."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._exact: dict[tuple[str, str], str] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def new_id(self) -> str:
        return f"cache_{time.time_ns():x}{next(self._ids):04x}"

    def exact(self, tenant: str, key: str, now: float) -> Entry | None:
        entry_id = self._exact.get((tenant, key))
        return self._live(entry_id, now) if entry_id else None

    def similar(self, tenant: str, namespace: str, vector: np.ndarray, threshold: float,
                now: float) -> list[tuple[float, Entry]]:
        """Live entries of the tenant's namespace at or over `threshold`, best first."""
        bucket = self._buckets.get((tenant, namespace))
        if bucket is None:
            return []
        found = [(score, self._live(entry_id, now)) for score, entry_id in bucket.nearest(vector, threshold)]
        return [(score, entry) for score, entry in found if entry is not None]

    def put(self, entry: Entry) -> None:
        old = self._exact.get((entry.tenant, entry.exact))
        if old is not None:
            self.remove(old)
        self._entries[entry.entry_id] = entry
        self._exact[(entry.tenant, entry.exact)] = entry.entry_id
        if entry.vector is not None and entry.namespace is not None:
            bucket = self._buckets.setdefault((entry.tenant, entry.namespace), _Bucket(len(entry.vector)))
            bucket.add(entry.entry_id, entry.vector)
        while len(self._entries) > self.max_entries:
            self.remove(next(iter(self._entries)))

    def get_any(self, entry_id: str) -> Entry | None:
        return self._entries.get(entry_id)

    def get(self, tenant: str, entry_id: str) -> Entry | None:
        entry = self._entries.get(entry_id)
        return entry if entry is not None and entry.tenant == tenant else None

    def remove(self, entry_id: str) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        self._exact.pop((entry.tenant, entry.exact), None)
        bucket = self._buckets.get((entry.tenant, entry.namespace)) if entry.namespace else None
        if bucket is not None and entry.vector is not None:
            bucket.remove(entry_id)
            if not bucket.ids:
                del self._buckets[(entry.tenant, entry.namespace)]

    def _live(self, entry_id: str, now: float) -> Entry | None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self.remove(entry_id)
            return None
        self._entries.move_to_end(entry_id)  # recently used: evicted last
        return entry
