"""The catalog of vector stores and their files (SQLite; the chunks themselves live in each store's backend).

Every row carries its team, and every read is by (team, id): a store of another team is simply not found.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_stores (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, name TEXT, created_at INTEGER NOT NULL, metadata TEXT NOT NULL,
    dim INTEGER, last_active_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS vector_stores_team ON vector_stores (team, created_at);
CREATE TABLE IF NOT EXISTS vector_store_files (
    store_id TEXT NOT NULL, id TEXT NOT NULL, team TEXT NOT NULL, filename TEXT NOT NULL, created_at INTEGER NOT NULL,
    status TEXT NOT NULL, usage_bytes INTEGER NOT NULL, chunks INTEGER NOT NULL, attributes TEXT NOT NULL,
    chunking TEXT NOT NULL, users TEXT NOT NULL, groups_ TEXT NOT NULL, last_error TEXT,
    PRIMARY KEY (store_id, id));
"""


@dataclass(slots=True)
class StoreRow:
    id: str
    team: str
    name: str | None
    created_at: int
    metadata: dict
    dim: int | None
    last_active_at: int


@dataclass(slots=True)
class FileRow:
    store_id: str
    id: str
    team: str
    filename: str
    created_at: int
    status: str
    usage_bytes: int
    chunks: int
    attributes: dict
    chunking: dict
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    last_error: dict | None = None


class Catalog:
    """Thread-safe (one connection behind a lock; every call is a short statement)."""

    def __init__(self, path: str):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add_store(self, row: StoreRow) -> None:
        self._run("INSERT INTO vector_stores VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (row.id, row.team, row.name, row.created_at, json.dumps(row.metadata), row.dim, row.last_active_at))

    def store(self, team: str, store_id: str) -> StoreRow | None:
        rows = self._run("SELECT * FROM vector_stores WHERE team = ? AND id = ?", (team, store_id))
        return _store(rows[0]) if rows else None

    def stores(self, team: str) -> list[StoreRow]:
        return [_store(r) for r in self._run("SELECT * FROM vector_stores WHERE team = ? ORDER BY created_at, id",
                                              (team,))]

    def all_stores(self) -> list[StoreRow]:
        return [_store(r) for r in self._run("SELECT * FROM vector_stores")]

    def set_dim(self, store_id: str, dim: int) -> None:
        self._run("UPDATE vector_stores SET dim = ? WHERE id = ?", (dim, store_id))

    def touch(self, store_id: str) -> None:
        self._run("UPDATE vector_stores SET last_active_at = ? WHERE id = ?", (int(time.time()), store_id))

    def delete_store(self, store_id: str) -> None:
        self._run("DELETE FROM vector_store_files WHERE store_id = ?", (store_id,))
        self._run("DELETE FROM vector_stores WHERE id = ?", (store_id,))

    def put_file(self, row: FileRow) -> None:
        self._run("INSERT OR REPLACE INTO vector_store_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (row.store_id, row.id, row.team, row.filename, row.created_at, row.status, row.usage_bytes,
                   row.chunks, json.dumps(row.attributes), json.dumps(row.chunking), json.dumps(row.users),
                   json.dumps(row.groups), json.dumps(row.last_error) if row.last_error else None))

    def file(self, store_id: str, file_id: str) -> FileRow | None:
        rows = self._run("SELECT * FROM vector_store_files WHERE store_id = ? AND id = ?", (store_id, file_id))
        return _file(rows[0]) if rows else None

    def files(self, store_id: str) -> list[FileRow]:
        return [_file(r) for r in self._run(
            "SELECT * FROM vector_store_files WHERE store_id = ? ORDER BY created_at, id", (store_id,))]

    def delete_file(self, store_id: str, file_id: str) -> None:
        self._run("DELETE FROM vector_store_files WHERE store_id = ? AND id = ?", (store_id, file_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _store(r: tuple) -> StoreRow:
    return StoreRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6])


def _file(r: tuple) -> FileRow:
    return FileRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), json.loads(r[9]),
                   json.loads(r[10]), json.loads(r[11]), json.loads(r[12]) if r[12] else None)
