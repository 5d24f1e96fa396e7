"""Incremental summaries: once `summary_every` items older than the recent window are not yet in the summary, the
cheap model is asked to fold them into it (the previous summary and only the new turns: its cost stays flat as
the conversation grows). Runs after the answer went out, one refresh per conversation at a time."""
from __future__ import annotations

import asyncio
import logging

from llmfleet.apps.endpoint import Endpoint, EndpointError
from llmfleet.apps.memory.config import MemoryConfig
from llmfleet.apps.memory.store import ConversationStore

logger = logging.getLogger(__name__)
INSTRUCTIONS = ("You maintain a running summary of a conversation. Rewrite the summary so that it also covers the "
                "new turns. Keep every name, number, date and decision; be brief; answer with the summary only.")


def summary_prompt(summary: str, turns: list[dict]) -> list[dict]:
    lines = "\n".join(f"{row['role']}: {row['text']}" for row in turns)
    current = summary or "(empty)"
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"Summary so far:\n{current}\n\nNew turns:\n{lines}\n\nUpdated summary:"}]


class Summarizer:
    def __init__(self, config: MemoryConfig, store: ConversationStore, endpoint: Endpoint):
        self.config, self.store, self.endpoint = config, store, endpoint
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()

    def schedule(self, tenant: str, conversation_id: str, first_recent_seq: int) -> None:
        """Refresh in the background if enough older items wait (items before `first_recent_seq`)."""
        task = asyncio.create_task(self.refresh(tenant, conversation_id, first_recent_seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self, tenant: str, conversation_id: str, first_recent_seq: int) -> bool:
        """Whether the summary was rewritten."""
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            row = await self.store.get(tenant, conversation_id)
            if row is None:
                return False
            rows = await self.store.items(tenant, conversation_id, after_seq=row["summary_upto"])
            waiting = [r for r in rows if r["seq"] < first_recent_seq]
            if len(waiting) < self.config.summary_every:
                return False
            try:
                summary = await self.endpoint.chat(self.config.summary_model, summary_prompt(row["summary"], waiting),
                                                   temperature=0, max_tokens=self.config.summary_max_tokens)
                tokens = await self.endpoint.count_tokens(self.config.summary_model, summary)
            except EndpointError as exc:  # the summary stays as it was; the turns remain recallable verbatim
                logger.warning("conversation %s: summary not refreshed: %s", conversation_id, exc)
                return False
            await self.store.set_summary(tenant, conversation_id, summary.strip(), waiting[-1]["seq"], tokens)
            return True

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let refreshes in flight finish (up to `timeout_s`)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
