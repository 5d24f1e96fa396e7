"""The conversation tables (SQLAlchemy Core), beside tenancy's in the same database. Every row names its tenant;
every query filters by it."""
from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, text
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = MetaData()

conversations = Table(
    "apps_conversations", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(200), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("summary", Text, nullable=False, default=""),
    Column("summary_upto", Integer, nullable=False, default=0),  # items with seq <= this are in the summary
    Column("summary_tokens", Integer, nullable=False, default=0),
    Column("next_seq", Integer, nullable=False, default=1))

items = Table(
    "apps_conversation_items", metadata,
    Column("id", String(64), primary_key=True),
    Column("conversation_id", String(64), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("item", JSON, nullable=False),         # the item as the API returns it
    Column("tokens", Integer, nullable=False),
    Column("embedding", LargeBinary),            # float32 unit vector of `text` (None until embedded)
    Column("created_at", Float, nullable=False),
    Index("ix_apps_items_conversation_seq", "conversation_id", "seq", unique=True))

CREATE_LOCK = 0x6C6C6D63  # PostgreSQL advisory lock id of the table creation ("llmc")


async def create(conn: AsyncConnection) -> None:
    """Create the tables where missing; on PostgreSQL under an advisory lock (gateways starting together)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": CREATE_LOCK})
    await conn.run_sync(lambda sync: metadata.create_all(sync, checkfirst=True))
