"""Where files and batches live: contents under `<dir>/files/`, metadata in `<dir>/batches.sqlite` (SQLAlchemy Core,
async, the same SQLite settings as tenancy's store: WAL, a busy timeout), so both survive a restart.

Rows are plain dicts shaped like OpenAI's File and Batch objects (see `file_object` / `batch_object`).
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, select, update

from llmfleet.tenancy.store import open_engine

metadata = MetaData()

files = Table(
    "batch_files", metadata,
    Column("id", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Integer, nullable=False))

batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("errors", JSON),
    Column("metadata", JSON),
    Column("total", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("created_at", Integer, nullable=False),
    *[Column(f"{name}_at", Integer) for name in ("in_progress", "expires", "finalizing", "completed", "failed",
                                                  "expired", "cancelling", "cancelled")])

_STAMPS = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
           "cancelling_at", "cancelled_at")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def file_object(row) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "status_details": None,
            "expires_at": None}


def batch_object(row) -> dict:
    body = {"id": row.id, "object": "batch", "endpoint": row.endpoint, "errors": row.errors,
            "input_file_id": row.input_file_id, "completion_window": row.completion_window, "status": row.status,
            "output_file_id": row.output_file_id, "error_file_id": row.error_file_id, "created_at": row.created_at,
            "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
            "metadata": row.metadata}
    body.update({name: getattr(row, name) for name in _STAMPS})
    return body


class BatchStore:
    """Files and batches of one server. Build with `await BatchStore.open(directory)`."""

    def __init__(self, directory: Path, engine):
        self.directory, self.engine = directory, engine
        self.files_dir = directory / "files"

    @classmethod
    async def open(cls, directory: str | os.PathLike) -> "BatchStore":
        folder = Path(directory)
        (folder / "files").mkdir(parents=True, exist_ok=True)
        engine = open_engine(f"sqlite:///{folder / 'batches.sqlite'}")
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        return cls(folder, engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- files ------------------------------------------------------------------------------------------------
    def path_of(self, file_id: str) -> Path:
        return self.files_dir / file_id

    async def add_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file_id = new_id("file")
        self.path_of(file_id).write_bytes(content)
        return await self.register_file(file_id, filename, purpose)

    async def register_file(self, file_id: str, filename: str, purpose: str) -> dict:
        """Records a file whose content is already at `path_of(file_id)`."""
        values = {"id": file_id, "purpose": purpose, "filename": filename,
                  "bytes": self.path_of(file_id).stat().st_size, "created_at": int(time.time())}
        async with self.engine.begin() as conn:
            await conn.execute(files.insert().values(**values))
        return await self.get_file(file_id)

    async def get_file(self, file_id: str) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(files).where(files.c.id == file_id))).first()
        return file_object(row) if row is not None else None

    async def list_files(self, purpose: str | None = None) -> list[dict]:
        query = select(files).order_by(files.c.created_at, files.c.id)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        async with self.engine.connect() as conn:
            return [file_object(r) for r in (await conn.execute(query)).all()]

    async def delete_file(self, file_id: str) -> bool:
        async with self.engine.begin() as conn:
            deleted = (await conn.execute(files.delete().where(files.c.id == file_id))).rowcount
        self.path_of(file_id).unlink(missing_ok=True)
        return bool(deleted)

    # ---- batches ----------------------------------------------------------------------------------------------
    async def add_batch(self, endpoint: str, input_file_id: str, completion_window: str, meta: dict | None) -> dict:
        now = int(time.time())
        values = {"id": new_id("batch"), "endpoint": endpoint, "input_file_id": input_file_id,
                  "completion_window": completion_window, "status": "validating", "metadata": meta,
                  "created_at": now, "expires_at": now + 24 * 3600}
        async with self.engine.begin() as conn:
            await conn.execute(batches.insert().values(**values))
        return await self.get_batch(values["id"])

    async def get_batch(self, batch_id: str) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        return batch_object(row) if row is not None else None

    async def list_batches(self, limit: int, after: str | None) -> tuple[list[dict], bool]:
        """Newest first, `limit` of them after the batch `after`; (batches, whether more follow)."""
        query = select(batches).order_by(batches.c.created_at.desc(), batches.c.id.desc())
        async with self.engine.connect() as conn:
            rows = [batch_object(r) for r in (await conn.execute(query)).all()]
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return rows[:limit], len(rows) > limit

    async def update_batch(self, batch_id: str, **values) -> None:
        """Sets columns; `status=X` also stamps `X_at` (now) unless given."""
        status = values.get("status")
        if status is not None and f"{status}_at" in _STAMPS and f"{status}_at" not in values:
            values[f"{status}_at"] = int(time.time())
        async with self.engine.begin() as conn:
            await conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))

    async def batches_in(self, statuses: tuple[str, ...]) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(batches).where(batches.c.status.in_(statuses)))).all()
        return [batch_object(r) for r in rows]
