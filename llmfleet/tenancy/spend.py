"""Spend is booked in batches: requests append rows here, one task writes them every `interval` seconds (sooner
when `batch_size` are waiting), and `close` writes what is left, so a SIGTERM drain loses nothing."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from llmfleet.tenancy.store import Store

logger = logging.getLogger(__name__)
MAX_PENDING = 100_000  # rows kept for retry while the database is unreachable; beyond, the oldest are dropped


class SpendWriter:
    def __init__(self, store: Store, interval: float, batch_size: int, on_written=None):
        self._store, self._interval, self._batch_size = store, interval, batch_size
        self._on_written = on_written  # async callable(key ids): budget alerts
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                await self._store.write_spend([dict(r) for r in rows])
            except Exception:
                logger.exception("writing %d spend rows failed; kept for the next flush", len(rows))
                self._pending = (rows + self._pending)[-MAX_PENDING:]
                return
        if self._on_written is not None:
            try:
                await self._on_written({r["key_id"] for r in rows})
            except Exception:
                logger.exception("budget alerts after a spend batch failed")

    async def close(self) -> None:
        # Stopped by a flag, not cancelled: a cancellation inside a write would lose the rows it had taken.
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()
