"""The background loop: one scrape per interval, each turned into a sample against the scrape `rate_span`
intervals before it (the first ones against the oldest kept), so that a sample's rates and percentiles span
rate_window_s (10 s by default) rather than one short interval: a few requests a second read as a rate, not as
alternating zeros and spikes, and a percentile line has no gap for each interval in which nothing finished."""
from __future__ import annotations

import asyncio
import logging
from collections import deque

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
        self._scrapes: deque[Scrape] = deque(maxlen=config.rate_span + 1)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def last(self) -> Scrape | None:
        return self._scrapes[-1] if self._scrapes else None

    async def step(self) -> None:
        """One scrape, and its sample against the oldest scrape kept (the very first only sets the baseline)."""
        now = await self.source.scrape()
        if self._scrapes:
            self.timeline.append(now.at, sample(self._scrapes[0], now, self.slo))
        self._scrapes.append(now)

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
