"""Vector stores for a team: create, list, delete; add files (extract, chunk, embed, index); search.

Every call names the caller (a Reader: team, user, groups). A store is found only by its own team; chunks carry
the team and the file's ACL into the index, and every search passes the caller down to the index query.
Ingestion is synchronous: a file is `completed` (or `failed`, with `last_error`) when the call returns.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable

from llmfleet.apps.retrieval import views
from llmfleet.apps.retrieval.catalog import Catalog, FileRow, StoreRow
from llmfleet.apps.retrieval.chunking import Chunker, ChunkingStrategy, extract_text
from llmfleet.apps.retrieval.config import RetrievalConfig
from llmfleet.apps.retrieval.embedder import Embedder
from llmfleet.apps.retrieval.filters import matches, parse_attributes, parse_filter
from llmfleet.apps.retrieval.types import Chunk, Reader

FileSource = Callable[[str], Awaitable[tuple[str, bytes] | None]]   # file id -> (filename, content) or None


class ApiError(Exception):
    """A client error in OpenAI's envelope terms."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def bad_request(exc: ValueError) -> ApiError:
    text = str(exc)
    return ApiError(400, text, "invalid_value", text.split(":", 1)[0] if ":" in text else None)


class RetrievalService:
    def __init__(self, config: RetrievalConfig, file_source: FileSource | None = None):
        os.makedirs(config.dir, exist_ok=True)
        self.config, self.file_source = config, file_source
        self.catalog = Catalog(os.path.join(config.dir, "catalog.sqlite"))
        self.chunker = Chunker(config.tokenizer)
        self.embedder = Embedder(config.embeddings_url, config.embedding_model, config.embeddings_api_key)
        self.default_chunking = ChunkingStrategy(config.chunk_tokens, config.chunk_overlap_tokens)
        self._backends: dict[str, object] = {}
        self._writes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._qdrant, self._qdrant_lock = None, None

    # ---- stores -------------------------------------------------------------------------------------------
    async def create_store(self, who: Reader, body: dict) -> dict:
        name, metadata = body.get("name"), body.get("metadata") or {}
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "name: a string expected", "invalid_value", "name")
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise ApiError(400, "metadata: an object of at most 16 keys expected", "invalid_value", "metadata")
        now = int(time.time())
        row = StoreRow("vs_" + secrets.token_hex(12), who.team, name, now, metadata, None, now)
        self.catalog.add_store(row)
        for file_id in body.get("file_ids") or ():
            await self.add_file(who, row.id, {"file_id": file_id})
        return views.store(row, self.catalog.files(row.id))

    def store(self, who: Reader, store_id: str) -> StoreRow:
        row = self.catalog.store(who.team, store_id)
        if row is None:
            raise ApiError(404, f"no vector store {store_id!r}", "not_found", "vector_store_id")
        return row

    def get_store(self, who: Reader, store_id: str) -> dict:
        row = self.store(who, store_id)
        return views.store(row, self.catalog.files(row.id))

    def list_stores(self, who: Reader, query: dict) -> dict:
        rows = self.catalog.stores(who.team)
        return views.page([views.store(r, self.catalog.files(r.id)) for r in rows], query)

    async def delete_store(self, who: Reader, store_id: str) -> dict:
        row = self.store(who, store_id)
        await asyncio.to_thread(self._drop_backend, row)
        self.catalog.delete_store(row.id)
        return {"id": row.id, "object": "vector_store.deleted", "deleted": True}

    # ---- files --------------------------------------------------------------------------------------------
    async def add_file(self, who: Reader, store_id: str, body: dict) -> dict:
        row = self.store(who, store_id)
        try:
            file_id, filename, data = await self._content(body)
            attributes = parse_attributes(body.get("attributes"))
            strategy = ChunkingStrategy.parse(body.get("chunking_strategy"), self.default_chunking)
            users, groups = _access(body.get("access"))
            text = extract_text(filename, data)
        except ValueError as exc:
            raise bad_request(exc) from None
        record = FileRow(row.id, file_id, who.team, filename, int(time.time()), "in_progress", len(data), 0,
                         attributes, strategy.as_json(), users, groups)
        pieces = await asyncio.to_thread(self.chunker.split, text, strategy)
        try:
            vectors = await self.embedder.embed(pieces) if pieces else None
        except Exception as exc:   # the file is recorded as failed, as OpenAI does, and the error is returned
            record.status, record.last_error = "failed", {"code": "server_error", "message": str(exc)[:500]}
            self.catalog.put_file(record)
            return views.file(record)
        chunks = [Chunk(f"{file_id}#{i}", vectors[i], who.team, file_id, piece, tuple(users), tuple(groups))
                  for i, piece in enumerate(pieces)]
        await asyncio.to_thread(self._index_file, row, file_id, chunks)
        record.status, record.chunks = "completed", len(chunks)
        self.catalog.put_file(record)
        self.catalog.touch(row.id)
        return views.file(record)

    def get_file(self, who: Reader, store_id: str, file_id: str) -> dict:
        return views.file(self._file(who, store_id, file_id))

    def list_files(self, who: Reader, store_id: str, query: dict) -> dict:
        rows = self.catalog.files(self.store(who, store_id).id)
        if query.get("filter"):
            rows = [r for r in rows if r.status == query["filter"]]
        return views.page([views.file(r) for r in rows], query)

    async def delete_file(self, who: Reader, store_id: str, file_id: str) -> dict:
        record = self._file(who, store_id, file_id)
        store = self.store(who, store_id)
        await asyncio.to_thread(lambda: self._backend(store).delete_doc(record.id) if store.dim else 0)
        self.catalog.delete_file(store_id, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    def _file(self, who: Reader, store_id: str, file_id: str) -> FileRow:
        record = self.catalog.file(self.store(who, store_id).id, file_id)
        if record is None:
            raise ApiError(404, f"no file {file_id!r} in vector store {store_id!r}", "not_found", "file_id")
        return record

    async def _content(self, body: dict) -> tuple[str, str, bytes]:
        if isinstance(body.get("content"), str):
            data = body["content"].encode()
            filename = body.get("filename") or "inline.txt"
            file_id = "file-" + secrets.token_hex(12)
        elif isinstance(body.get("file_id"), str):
            file_id = body["file_id"]
            found = await self.file_source(file_id) if self.file_source is not None else None
            if found is None:
                raise ValueError(f"file_id: no file {file_id!r} here (upload it to /v1/files, or send content)")
            filename, data = found
        else:
            raise ValueError("file_id: give a file_id from /v1/files, or the text as content (with a filename)")
        if len(data) > self.config.max_file_bytes:
            raise ValueError(f"file: {len(data)} bytes is over the limit of {self.config.max_file_bytes}")
        return file_id, filename, data

    # ---- search -------------------------------------------------------------------------------------------
    async def search(self, who: Reader, store_id: str, body: dict) -> dict:
        row = self.store(who, store_id)
        try:
            queries, k, threshold, spec = _search_args(body)
        except ValueError as exc:
            raise bad_request(exc) from None
        files = {f.id: f for f in self.catalog.files(row.id) if f.status == "completed"}
        docs = None if spec is None else frozenset(i for i, f in files.items() if matches(spec, f.attributes))
        hits = []
        if row.dim is not None and (docs is None or docs):
            vectors = await self.embedder.embed(queries)
            backend = self._backend(row)
            for vector in vectors:
                hits += await asyncio.to_thread(backend.search, vector, k, who, docs)
        best: dict[str, object] = {}
        for hit in hits:
            if (threshold is None or hit.score >= threshold) and hit.doc in files and (hit.chunk_id not in best or
                                                                 hit.score > best[hit.chunk_id].score):
                best[hit.chunk_id] = hit
        ranked = sorted(best.values(), key=lambda h: -h.score)[:k]
        return views.search_page(queries, ranked, files)

    # ---- backends -----------------------------------------------------------------------------------------
    def _index_file(self, row: StoreRow, file_id: str, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        if row.dim is None:
            row.dim = len(chunks[0].vector)
            self.catalog.set_dim(row.id, row.dim)
        backend = self._backend(row)
        backend.delete_doc(file_id)           # re-adding a file replaces its chunks
        backend.upsert(chunks)
        self._maybe_snapshot(row.id, backend, len(chunks))

    def _backend(self, row: StoreRow):
        with self._lock:
            backend = self._backends.get(row.id)
            if backend is None:
                backend = self._backends[row.id] = self._open_backend(row)
            return backend

    def _open_backend(self, row: StoreRow):
        if self.config.backend == "qdrant":
            from llmfleet.apps.retrieval.qdrant import QdrantBackend, open_client
            if self._qdrant is None:
                self._qdrant, self._qdrant_lock = open_client(self.config)
            return QdrantBackend(self._qdrant, row.id, row.dim, self._qdrant_lock)
        from llmfleet.apps.retrieval.collection import Collection
        return Collection(row.dim, os.path.join(self.config.dir, "stores", row.id), self.config.index)

    def _maybe_snapshot(self, store_id: str, backend, writes: int) -> None:
        self._writes[store_id] = self._writes.get(store_id, 0) + writes
        if self._writes[store_id] >= self.config.snapshot_every_writes and hasattr(backend, "snapshot"):
            self._writes[store_id] = 0
            backend.snapshot()

    def _drop_backend(self, row: StoreRow) -> None:
        with self._lock:
            backend = self._backends.pop(row.id, None)
        if backend is None and row.dim is not None:
            backend = self._open_backend(row)
        if backend is None:
            return
        if hasattr(backend, "drop"):
            backend.drop()
        else:
            backend.close()
            import shutil
            shutil.rmtree(os.path.join(self.config.dir, "stores", row.id), ignore_errors=True)

    async def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await asyncio.to_thread(backend.close)
        if self._qdrant is not None:
            self._qdrant.close()
        await self.embedder.close()
        self.catalog.close()


def _access(spec) -> tuple[list[str], list[str]]:
    """The file's ACL from `access: {"users": [...], "groups": [...]}` (absent: the whole team)."""
    if spec is None:
        return [], []
    if not isinstance(spec, dict) or set(spec) - {"users", "groups"}:
        raise ValueError('access: {"users": [...], "groups": [...]} expected')
    lists = [spec.get(name) or [] for name in ("users", "groups")]
    for name, values in zip(("users", "groups"), lists):
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"access.{name}: a list of non-empty strings expected")
    return lists[0], lists[1]


def _search_args(body: dict) -> tuple[list[str], int, float | None, dict | None]:
    query = body.get("query")
    queries = [query] if isinstance(query, str) else query
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise ValueError("query: a non-empty string or list of strings expected")
    k = body.get("max_num_results", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50:
        raise ValueError("max_num_results: an integer in [1, 50] expected")
    ranking = body.get("ranking_options") or {}
    if not isinstance(ranking, dict):
        raise ValueError("ranking_options: an object expected")
    threshold = ranking.get("score_threshold")     # cosine similarity; None: no threshold (scores may be < 0)
    if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
                                  or not 0 <= threshold <= 1):
        raise ValueError("ranking_options.score_threshold: a number in [0, 1] expected")
    if body.get("rewrite_query"):
        raise ValueError("rewrite_query: not supported (send the query you want searched)")
    spec = parse_filter(body["filters"]) if body.get("filters") is not None else None
    return queries, k, None if threshold is None else float(threshold), spec
