"""Conversation memory at run time: the store, the model endpoints, and the two steps around a chat request that
names a conversation: `prepare` (the request with its history in front) and `record` (its turns appended)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from llmfleet.apps.endpoint import Endpoint, EndpointError
from llmfleet.apps.memory.config import DEFAULT_DATABASE_URL, MemoryConfig
from llmfleet.apps.memory.context import MESSAGE_OVERHEAD, History, build_history
from llmfleet.apps.memory.items import item_text, parse_item
from llmfleet.apps.memory.store import ConversationStore, NewItem
from llmfleet.apps.memory.summarizer import Summarizer

logger = logging.getLogger(__name__)


class NotFound(Exception):
    """No such conversation for this tenant."""


@dataclass(slots=True)
class Prepared:
    conversation_id: str
    payload: dict              # the request to send on, its history in front
    new: list[NewItem]         # the request's own turns, to append with the answer
    vectors: list              # their embeddings (None where embedding failed)
    history: History


class Memory:
    def __init__(self, config: MemoryConfig, database_url: str | None = None):
        self.config = config
        self.database_url = config.database_url or database_url or DEFAULT_DATABASE_URL
        self.store: ConversationStore | None = None
        self.endpoint = self.embedder = None
        self.summarizer: Summarizer | None = None

    async def start(self) -> None:
        self.store = await ConversationStore.open(self.database_url)
        self.endpoint = Endpoint(self.config.base_url, self.config.api_key, self.config.timeout_s)
        self.embedder = (Endpoint(self.config.embedding_url, self.config.api_key, self.config.timeout_s)
                         if self.config.embedding_url else self.endpoint)
        self.summarizer = Summarizer(self.config, self.store, self.endpoint)

    async def close(self) -> None:
        if self.summarizer is not None:
            await self.summarizer.close()
        for endpoint in {id(e): e for e in (self.endpoint, self.embedder) if e is not None}.values():
            await endpoint.close()
        if self.store is not None:
            await self.store.close()

    async def new_items(self, raw: list[tuple[str, str, dict]]) -> list[NewItem]:
        """Items with their token counts (the summary model's tokenizer, plus the template's per-message cost)."""
        counted = []
        for role, text, item in raw:
            tokens = await self.endpoint.count_tokens(self.config.summary_model, text) + MESSAGE_OVERHEAD
            counted.append(NewItem(role, text, item, tokens))
        return counted

    async def embed(self, texts: list[str]) -> list[np.ndarray | None]:
        """Unit vectors of `texts`; Nones where the embedding server failed (those turns are not recalled)."""
        if not texts:
            return []
        try:
            return list(await self.embedder.embed(self.config.embedding_model, texts))
        except EndpointError as exc:
            logger.warning("conversation memory: embedding failed, recall skips these turns: %s", exc)
            return [None] * len(texts)

    async def append(self, tenant: str, conversation_id: str, new: list[NewItem],
                     vectors: list | None = None) -> list[dict] | None:
        """Store turns (embedding those without a vector) and refresh the summary if it is due."""
        rows = await self.store.add(tenant, conversation_id, new)
        if not rows:
            return rows
        vectors = vectors if vectors is not None else await self.embed([n.text for n in new])
        await self.store.set_embeddings({row["id"]: v.astype(np.float32).tobytes()
                                         for row, v in zip(rows, vectors) if v is not None})
        self._schedule_summary(tenant, conversation_id, await self.store.items(tenant, conversation_id))
        return rows

    def _schedule_summary(self, tenant: str, conversation_id: str, rows: list[dict]) -> None:
        budget, used, first_recent = int(self.config.token_budget * self.config.recent_share), 0, None
        for row in reversed(rows):  # the same window build_history keeps verbatim
            if used + row["tokens"] > budget:
                break
            used += row["tokens"]
            first_recent = row["seq"]
        self.summarizer.schedule(tenant, conversation_id, first_recent or (rows[-1]["seq"] + 1 if rows else 1))

    async def prepare(self, tenant: str, payload: dict) -> Prepared:
        """The chat request with the conversation's history before its own messages; NotFound, ValueError."""
        conversation_id = _conversation_id(payload.get("conversation"))
        conversation = await self.store.get(tenant, conversation_id)
        if conversation is None:
            raise NotFound(conversation_id)
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages: a conversation turn needs at least one message")
        system = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
        turns = [m for m in messages if m not in system]
        new = await self.new_items([parse_item({"type": "message", **m}, f"messages.{i}")
                                    for i, m in enumerate(turns)])
        vectors = await self.embed([n.text for n in new])
        query = next((v for n, v in zip(reversed(new), reversed(vectors)) if n.role == "user"), None)
        rows = await self.store.items(tenant, conversation_id)
        history = build_history(rows, conversation["summary"], conversation["summary_tokens"], query,
                                self.config.token_budget, self.config.recent_share, self.config.recalled_items)
        sent = {k: v for k, v in payload.items() if k != "conversation"}
        sent["messages"] = system + history.messages + turns
        return Prepared(conversation_id, sent, new, vectors, history)

    async def record(self, tenant: str, prepared: Prepared, answer_text: str) -> None:
        """Append the request's turns and the assistant's answer."""
        reply = await self.new_items([parse_item({"role": "assistant", "content": answer_text}, "answer")])
        vectors = prepared.vectors + await self.embed([answer_text])
        await self.append(tenant, prepared.conversation_id, prepared.new + reply, vectors)


def _conversation_id(value) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise ValueError("conversation: a conversation id (or {\"id\": ...}) expected")
    return value


def message_text(message: dict) -> str:
    return item_text(message.get("content") or "", "message")
