"""The tenancy tables (SQLAlchemy Core) and their versioned creation.

`tenancy_schema` records each applied version; `migrate` applies the missing ones in order, so a database made by
an older llmfleet is brought forward and a current one is left alone. Keys are stored by their HMAC only.
"""
from __future__ import annotations

import time

from sqlalchemy import (JSON, Boolean, Column, Float, Index, Integer, MetaData, String, Table, select, text)
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = MetaData()

schema_versions = Table(
    "tenancy_schema", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False))


def _limits() -> list[Column]:
    """What keys and teams share: models, budget, limits, and the spend of the current budget period."""
    return [Column("models", JSON, nullable=False, default=list),
            Column("max_budget", Float), Column("budget_duration_s", Float), Column("soft_budget", Float),
            Column("rpm_limit", Integer), Column("tpm_limit", Integer), Column("max_parallel_requests", Integer),
            Column("spend", Float, nullable=False, default=0.0),
            Column("period_spend", Float, nullable=False, default=0.0),
            Column("period_index", Integer, nullable=False, default=0),
            Column("metadata", JSON, nullable=False, default=dict),
            Column("created_at", Float, nullable=False)]


teams = Table(
    "tenancy_teams", metadata,
    Column("team_id", String(64), primary_key=True),
    Column("team_alias", String(256)),
    *_limits())

users = Table(
    "tenancy_users", metadata,
    Column("user_id", String(128), primary_key=True),
    Column("user_email", String(256)),
    Column("team_id", String(64)),
    *_limits())

keys = Table(
    "tenancy_keys", metadata,
    Column("key_hash", String(64), primary_key=True),  # hex HMAC-SHA256 of the key; never the key itself
    Column("key_id", String(32), nullable=False, unique=True),
    Column("key_hint", String(16), nullable=False),
    Column("key_alias", String(256)),
    Column("team_id", String(64), index=True),
    Column("user_id", String(128), index=True),
    Column("expires_at", Float),
    Column("blocked", Boolean, nullable=False, default=False),
    Column("updated_at", Float, nullable=False),
    *_limits())

spend_logs = Table(
    "tenancy_spend", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("team_id", String(64)),
    Column("user_id", String(128)),
    Column("model", String(256)),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Index("ix_tenancy_spend_key_time", "key_id", "started_at"),
    Index("ix_tenancy_spend_team_time", "team_id", "started_at"))

MIGRATIONS = {1: (schema_versions, teams, users, keys, spend_logs)}  # version -> tables it creates
LATEST = max(MIGRATIONS)
MIGRATION_LOCK = 0x6C6C6D66  # PostgreSQL advisory lock id of the migration ("llmf")


async def migrate(conn: AsyncConnection) -> int:
    """Apply the versions not yet recorded; returns the schema's version. On PostgreSQL the migration holds an
    advisory lock to its transaction's end, so gateways starting together apply it one after another."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
    await conn.run_sync(lambda sync: schema_versions.create(sync, checkfirst=True))
    done = set((await conn.execute(select(schema_versions.c.version))).scalars())
    for version in sorted(set(MIGRATIONS) - done):
        tables = MIGRATIONS[version]
        await conn.run_sync(lambda sync: metadata.create_all(sync, tables=list(tables), checkfirst=True))
        await conn.execute(schema_versions.insert().values(version=version, applied_at=time.time()))
    return LATEST
