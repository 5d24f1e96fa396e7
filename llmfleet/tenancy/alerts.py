"""Budget alerts to a webhook as Slack-compatible JSON ({"text": ...}), once per key (or team), kind and UTC day,
deduplicated in Redis across gateways when there is one, else in this process: `soft_budget` when a written spend
batch takes a key's period spend to it, `exhausted` when a request is refused for the budget (reservations keep
the spend itself below max_budget)."""
from __future__ import annotations

import logging
import time

import httpx
from sqlalchemy import select

from llmfleet.tenancy.schema import keys

logger = logging.getLogger(__name__)
DAY_S = 86400


class BudgetAlerts:
    def __init__(self, url: str, store, redis=None, prefix: str = "llmfleet"):
        self._url, self._store, self._redis, self._prefix = url, store, redis, prefix
        self._sent: set[str] = set()
        self._client = httpx.AsyncClient(timeout=5.0)

    async def check(self, key_ids: set[str]) -> None:
        if not key_ids:
            return
        query = select(keys.c.key_id, keys.c.key_alias, keys.c.period_spend, keys.c.soft_budget,
                       keys.c.max_budget).where(keys.c.key_id.in_(sorted(key_ids)))
        async with self._store.engine.connect() as conn:
            rows = list(await conn.execute(query))
        for row in rows:
            if row.soft_budget is not None and row.period_spend >= row.soft_budget:
                text = (f"llmfleet: key {row.key_alias or row.key_id} spent ${row.period_spend:.4f}, past its soft "
                        f"budget ${row.soft_budget:.4f}")
                await self.notify(f"key:{row.key_id}", "soft_budget", text, row.period_spend, row.soft_budget)

    async def exhausted(self, subject: str, max_budget: float) -> None:
        """`subject` ("key:<id>" or "team:<id>") was refused a request for its budget."""
        text = f"llmfleet: {subject.replace(':', ' ', 1)} reached its budget ${max_budget:.4f}; requests are refused"
        await self.notify(subject, "exhausted", text, None, max_budget)

    async def notify(self, subject: str, kind: str, text: str, spend: float | None, limit: float) -> None:
        """Post {"text", "subject", "kind", "spend", "limit"} once per subject, kind and UTC day (drift monitoring
        sends its alerts this way too, its measured value as `spend`)."""
        if not await self._first(f"{subject}:{kind}:{int(time.time() // DAY_S)}"):
            return
        payload = {"text": text, "subject": subject, "kind": kind, "spend": spend, "limit": limit}
        try:
            (await self._client.post(self._url, json=payload)).raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("budget alert for %s not delivered: %s", subject, exc)

    async def _first(self, token: str) -> bool:
        if self._redis is not None:
            return bool(await self._redis.set(f"{self._prefix}:alert:{token}", 1, nx=True, ex=2 * DAY_S))
        if token in self._sent:
            return False
        self._sent.add(token)
        return True

    async def close(self) -> None:
        await self._client.aclose()
