"""The background loop: one scrape per interval, each one turned into a sample against the one before."""
from __future__ import annotations

import asyncio
import logging

from llmfleet.console.config import ConsoleConfig
from llmfleet.console.sample import Scrape, Slo, sample
from llmfleet.console.source import ConsoleSource
from llmfleet.console.timeline import Timeline

logger = logging.getLogger(__name__)


class Sampler:
    def __init__(self, source: ConsoleSource, config: ConsoleConfig):
        self.source, self.config = source, config
        self.timeline = Timeline(config.capacity)
        self.slo = Slo(config.ttft_slo_s, config.tpot_slo_s)
        self.last: Scrape | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def step(self) -> None:
        """One scrape, and its sample against the previous scrape (the first one only sets the baseline)."""
        now = await self.source.scrape()
        if self.last is not None:
            self.timeline.append(now.at, sample(self.last, now, self.slo))
        self.last = now

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.step()
            except Exception:  # a bad scrape must not end the console's history
                logger.exception("console sample failed")
            next_at += self.config.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - self.config.interval_s)  # after a stall, do not catch up in bursts
