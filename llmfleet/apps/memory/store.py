"""Conversations and their items in the database: SQLite (WAL) by default, PostgreSQL shared; SQLAlchemy async.
A conversation of another tenant is indistinguishable from a missing one."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from llmfleet.apps.memory import schema
from llmfleet.apps.memory.schema import conversations, items
from llmfleet.tenancy.store import open_engine


@dataclass(slots=True)
class NewItem:
    role: str
    text: str
    item: dict      # the API's shape, without id (added here)
    tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


class ConversationStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> "ConversationStore":
        engine = open_engine(url)
        async with engine.begin() as conn:
            await schema.create(conn)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def create(self, tenant: str, metadata: dict) -> dict:
        row = {"id": new_id("conv"), "tenant": tenant, "created_at": time.time(), "metadata": metadata,
               "summary": "", "summary_upto": 0, "summary_tokens": 0, "next_seq": 1}
        async with self.engine.begin() as conn:
            await conn.execute(conversations.insert().values(**row))
        return row

    async def get(self, tenant: str, conversation_id: str) -> dict | None:
        query = select(conversations).where(conversations.c.id == conversation_id, conversations.c.tenant == tenant)
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        return dict(found._mapping) if found else None

    async def update_metadata(self, tenant: str, conversation_id: str, metadata: dict) -> dict | None:
        async with self.engine.begin() as conn:
            await conn.execute(update(conversations).where(conversations.c.id == conversation_id,
                                                           conversations.c.tenant == tenant).values(metadata=metadata))
        return await self.get(tenant, conversation_id)

    async def delete(self, tenant: str, conversation_id: str) -> bool:
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(conversations).where(conversations.c.id == conversation_id,
                                                                  conversations.c.tenant == tenant))
            if gone.rowcount:
                await conn.execute(delete(items).where(items.c.conversation_id == conversation_id,
                                                       items.c.tenant == tenant))
        return bool(gone.rowcount)

    async def add(self, tenant: str, conversation_id: str, new: list[NewItem]) -> list[dict] | None:
        """Append items in order (one transaction); their rows, None when there is no such conversation."""
        async with self.engine.begin() as conn:
            query = select(conversations.c.next_seq).where(conversations.c.id == conversation_id,
                                                           conversations.c.tenant == tenant)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()  # two gateways appending at once get consecutive seqs
            seq = (await conn.execute(query)).scalar()
            if seq is None:
                return None
            rows = [_item_row(tenant, conversation_id, seq + i, n) for i, n in enumerate(new)]
            if rows:
                await conn.execute(items.insert(), rows)
                await conn.execute(update(conversations).where(conversations.c.id == conversation_id)
                                   .values(next_seq=seq + len(rows)))
        return rows

    async def items(self, tenant: str, conversation_id: str, after_seq: int = 0, limit: int | None = None,
                    descending: bool = False) -> list[dict]:
        order = items.c.seq.desc() if descending else items.c.seq
        query = select(items).where(items.c.conversation_id == conversation_id, items.c.tenant == tenant)
        if after_seq:
            query = query.where(items.c.seq < after_seq if descending else items.c.seq > after_seq)
        query = query.order_by(order).limit(limit) if limit else query.order_by(order)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def item(self, tenant: str, conversation_id: str, item_id: str) -> dict | None:
        query = select(items).where(items.c.id == item_id, items.c.conversation_id == conversation_id,
                                    items.c.tenant == tenant)
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        return dict(found._mapping) if found else None

    async def delete_item(self, tenant: str, conversation_id: str, item_id: str) -> bool:
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(items).where(items.c.id == item_id, items.c.tenant == tenant,
                                                          items.c.conversation_id == conversation_id))
        return bool(gone.rowcount)

    async def set_embeddings(self, vectors: dict[str, bytes]) -> None:
        async with self.engine.begin() as conn:
            for item_id, vector in vectors.items():
                await conn.execute(update(items).where(items.c.id == item_id).values(embedding=vector))

    async def set_summary(self, tenant: str, conversation_id: str, summary: str, upto: int, tokens: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(conversations).where(conversations.c.id == conversation_id,
                                                           conversations.c.tenant == tenant)
                               .values(summary=summary, summary_upto=upto, summary_tokens=tokens))


def _item_row(tenant: str, conversation_id: str, seq: int, new: NewItem) -> dict:
    item_id = new_id("msg")
    return {"id": item_id, "conversation_id": conversation_id, "tenant": tenant, "seq": seq, "role": new.role,
            "text": new.text, "item": {"id": item_id, **new.item}, "tokens": new.tokens, "embedding": None,
            "created_at": time.time()}
