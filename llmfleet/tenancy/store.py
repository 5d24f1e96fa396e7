"""The tenancy database: SQLite (WAL) by default, PostgreSQL for several gateways; SQLAlchemy 2 async."""
from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import case, delete, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmfleet.tenancy import schema
from llmfleet.tenancy.records import KeyRecord, key_record
from llmfleet.tenancy.schema import keys, spend_logs, teams, users


def async_url(url: str) -> str:
    """The async driver's URL: sqlite -> aiosqlite, postgresql -> asyncpg (an explicit driver is kept)."""
    scheme, sep, rest = url.partition("://")
    if "+" in scheme:
        return url
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"database_url: unsupported scheme {scheme!r}")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def open_engine(url: str) -> AsyncEngine:
    """An async SQLAlchemy engine for `url` (SQLite or PostgreSQL), as every llmfleet store opens one: SQLite in WAL
    mode with a busy timeout (several processes may share the file), PostgreSQL connections checked before use."""
    engine = create_async_engine(async_url(url), pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> "Store":
        engine = open_engine(url)
        async with engine.begin() as conn:
            await schema.migrate(conn)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def insert(self, table, values: dict) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(table.insert().values(**values))

    async def row(self, table, column: str, value):
        async with self.engine.connect() as conn:
            result = await conn.execute(select(table).where(table.c[column] == value))
            return result.first()

    async def lookup(self, key_hash: str) -> KeyRecord | None:
        """The key and its team, by the key's hash: the cache's source."""
        async with self.engine.connect() as conn:
            key_row = (await conn.execute(select(keys).where(keys.c.key_hash == key_hash))).first()
            if key_row is None:
                return None
            team_row = None
            if key_row.team_id is not None:
                team_row = (await conn.execute(select(teams).where(teams.c.team_id == key_row.team_id))).first()
        return key_record(key_row, team_row)

    async def update_key(self, key_id: str, values: dict) -> str | None:
        """Update a key's fields; returns its hash (for cache invalidation), None when there is no such key."""
        async with self.engine.begin() as conn:
            found = (await conn.execute(select(keys.c.key_hash).where(keys.c.key_id == key_id))).scalar()
            if found is not None and values:
                await conn.execute(update(keys).where(keys.c.key_id == key_id)
                                   .values(**values, updated_at=time.time()))
        return found

    async def delete_keys(self, key_ids: list[str], team_id: str | None = None) -> list[tuple[str, str]]:
        """Delete keys by id; returns (key_id, key_hash) of those deleted."""
        async with self.engine.begin() as conn:
            query = select(keys.c.key_id, keys.c.key_hash).where(keys.c.key_id.in_(key_ids))
            found = [tuple(r) for r in await conn.execute(query)]
            if found:
                await conn.execute(delete(keys).where(keys.c.key_id.in_([k for k, _ in found])))
        return found

    async def write_spend(self, rows: list[dict]) -> None:
        """One transaction: the spend rows, and each key's and team's spend (total and of its budget period)."""
        if not rows:
            return
        totals = _sums(rows)  # takes each row's budget periods out, leaving the spend_logs columns
        async with self.engine.begin() as conn:
            await conn.execute(spend_logs.insert(), rows)
            for table, column, sums in totals:
                for (ident, period), amount in sums.items():
                    await conn.execute(_add_spend(table, column, ident, period, amount))

    async def spend_logs(self, filters: dict, start: float | None, end: float | None, limit: int) -> list[dict]:
        query = select(spend_logs).order_by(spend_logs.c.id.desc()).limit(limit)
        for column, value in filters.items():
            query = query.where(spend_logs.c[column] == value)
        if start is not None:
            query = query.where(spend_logs.c.started_at >= start)
        if end is not None:
            query = query.where(spend_logs.c.started_at < end)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def spend_report(self, group_by: str, start: float | None, end: float | None) -> list[dict]:
        column = spend_logs.c[group_by]
        query = select(column.label(group_by), func.count().label("requests"),
                       func.sum(spend_logs.c.cost).label("spend"),
                       func.sum(spend_logs.c.prompt_tokens).label("prompt_tokens"),
                       func.sum(spend_logs.c.completion_tokens).label("completion_tokens")).group_by(column)
        if start is not None:
            query = query.where(spend_logs.c.started_at >= start)
        if end is not None:
            query = query.where(spend_logs.c.started_at < end)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query.order_by(column))]


def _sums(rows: list[dict]):
    by_key, by_team = defaultdict(float), defaultdict(float)
    for row in rows:
        by_key[(row["key_id"], row.pop("key_period"))] += row["cost"]
        team_period = row.pop("team_period")
        if row["team_id"] is not None:
            by_team[(row["team_id"], team_period)] += row["cost"]
    return ((keys, "key_id", by_key), (teams, "team_id", by_team))


def _add_spend(table, column: str, ident: str, period: int, amount: float):
    same = table.c.period_index == period
    return (update(table).where(table.c[column] == ident)
            .values(spend=table.c.spend + amount, period_index=period,
                    period_spend=case((same, table.c.period_spend + amount), else_=amount)))
