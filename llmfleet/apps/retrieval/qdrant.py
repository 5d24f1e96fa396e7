"""The backend interface over Qdrant, for stores that outgrow one machine.

`QdrantClient(url=...)` talks to a Qdrant cluster; `QdrantClient(path=...)` or `(":memory:")` is its embedded
local mode (what the tests run). Tenancy lives in the query: every point carries its team, document and ACL in the
payload, and each search sends one filter (team = the reader's, ACL admits the reader, document in the allowed
set) that Qdrant applies during the HNSW walk (its filterable HNSW and, for small filtered sets, full scan).
The team field is indexed as Qdrant's tenant key (`is_tenant`), which co-locates a tenant's points.
"""
from __future__ import annotations

import contextlib
import threading
import uuid
import warnings

import numpy as np
from qdrant_client import QdrantClient, models

from llmfleet.apps.retrieval.types import Chunk, Hit, Reader, acl_principals

EVERYONE = "*"                           # the ACL entry of chunks every member of their team may read
_NAMESPACE = uuid.UUID("6f1c3f43-7d0b-4b8e-9a51-3c0f9f4c2a10")


def point_id(chunk_id: str) -> str:
    """Qdrant ids are UUIDs or integers: a stable UUID of the chunk id."""
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


class QdrantBackend:
    """One vector store as one Qdrant collection (created on first use)."""

    def __init__(self, client: QdrantClient, name: str, dim: int, lock: threading.Lock | None = None):
        """`lock`: serializes calls, for Qdrant's local mode (an in-process engine not meant for threads); a
        server client needs none."""
        self.client, self.name, self.dim = client, name, dim
        self._lock = lock or contextlib.nullcontext()
        if not client.collection_exists(name):
            client.create_collection(name, vectors_config=models.VectorParams(size=dim,
                                                                              distance=models.Distance.COSINE))
            with warnings.catch_warnings():      # local mode has no payload indexes and says so
                warnings.simplefilter("ignore", UserWarning)
                for field, tenant in (("team", True), ("doc", False), ("acl", False)):
                    client.create_payload_index(name, field, models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=tenant))

    def _upsert(self, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        points = [models.PointStruct(id=point_id(c.id), vector=_vector(c.vector, self.dim), payload={
            "chunk_id": c.id, "team": c.team, "doc": c.doc, "text": c.text,
            "acl": list(acl_principals(c.users, c.groups)) or [EVERYONE]}) for c in chunks]
        self.client.upsert(self.name, points=points, wait=True)

    def _delete(self, chunk_ids: list[str]) -> int:
        present = self.client.retrieve(self.name, [point_id(i) for i in chunk_ids], with_payload=False)
        if present:
            self.client.delete(self.name, points_selector=models.PointIdsList(points=[p.id for p in present]),
                               wait=True)
        return len(present)

    def _delete_doc(self, doc: str) -> int:
        selector = models.Filter(must=[_match("doc", doc)])
        count = self.client.count(self.name, count_filter=selector, exact=True).count
        self.client.delete(self.name, points_selector=models.FilterSelector(filter=selector), wait=True)
        return count

    def _search(self, query: np.ndarray, k: int, reader: Reader, docs: frozenset[str] | None = None) -> list[Hit]:
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        if docs is not None and not docs:
            return []
        must = [_match("team", reader.team),
                models.FieldCondition(key="acl", match=models.MatchAny(any=[EVERYONE, *reader.principals()]))]
        if docs is not None:
            must.append(models.FieldCondition(key="doc", match=models.MatchAny(any=sorted(docs))))
        found = self.client.query_points(self.name, query=_vector(query, self.dim), limit=k,
                                         query_filter=models.Filter(must=must), with_payload=True).points
        return [Hit(p.payload["chunk_id"], p.payload["doc"], float(p.score), p.payload["text"]) for p in found]

    def _count(self) -> int:
        return self.client.count(self.name, exact=True).count

    def upsert(self, chunks: list[Chunk]) -> None:
        with self._lock:
            self._upsert(chunks)

    def delete(self, chunk_ids: list[str]) -> int:
        with self._lock:
            return self._delete(chunk_ids)

    def delete_doc(self, doc: str) -> int:
        with self._lock:
            return self._delete_doc(doc)

    def search(self, query: np.ndarray, k: int, reader: Reader, docs: frozenset[str] | None = None) -> list[Hit]:
        with self._lock:
            return self._search(query, k, reader, docs)

    def count(self) -> int:
        with self._lock:
            return self._count()

    def drop(self) -> None:
        self.client.delete_collection(self.name)

    def close(self) -> None:
        """The client is shared by every store; closed by its owner."""


def _match(field: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=field, match=models.MatchValue(value=value))


def _vector(vector, dim: int) -> list[float]:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if len(array) != dim:
        raise ValueError(f"vector: {dim} dimensions expected, got {len(array)}")
    if not np.all(np.isfinite(array)) or not array.any():
        raise ValueError("vector: must be finite and non-zero")
    return array.tolist()


def open_client(config) -> tuple[QdrantClient, threading.Lock | None]:
    """(client, lock) for a RetrievalConfig: its Qdrant server (no lock), else Qdrant's local mode in a folder
    under config.dir, with the lock every store's backend shares."""
    import os

    if config.qdrant_url:
        return QdrantClient(url=config.qdrant_url), None
    return QdrantClient(path=os.path.join(config.dir, "qdrant")), threading.Lock()
