"""One replica as the console's source: its own /metrics registry, read at each sample, and a one-row table.

A single replica offers no drain action: its drain (SIGTERM) ends with the process exiting, which is no button to
press by accident; operators drain a replica at the gateway, which keeps it running and can undrain it.
"""
from __future__ import annotations

import importlib.metadata
import time

from llmfleet.console.prom import Metrics
from llmfleet.console.sample import Scrape
from llmfleet.console.source import ConsoleError
from llmfleet.engine.streams import EngineDeadError
from llmfleet.server.config import ServerConfig
from llmfleet.server.context import ServingContext


def _software() -> str:
    try:
        return importlib.metadata.version("llmfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ReplicaSource:
    kind = "replica"
    can_drain = False

    def __init__(self, config: ServerConfig):
        scheme = "https" if config.tls else "http"
        self.url = f"{scheme}://{config.host}:{config.port}"
        self.ctx: ServingContext | None = None
        self._last: Metrics | None = None
        self._software = _software()

    def start(self, state: dict) -> None:
        self.ctx = state.get("ctx")

    async def scrape(self) -> Scrape:
        if self.ctx is None:  # the host ran without lifespan state: nothing to read
            return Scrape(time.time(), {self.url: None})
        try:
            stats = await self.ctx.engine.stats()
        except EngineDeadError:
            stats = None  # latencies and counts are still there
        self._last = Metrics.parse(self.ctx.metrics.render(stats))
        return Scrape(time.time(), {self.url: self._last})

    def replicas(self) -> list[dict]:
        ctx, metrics = self.ctx, self._last
        if ctx is None:
            return []
        load = {name: metrics.total(metric) if metrics else None for name, metric in (
            ("running", "vllm:num_requests_running"), ("waiting", "vllm:num_requests_waiting"),
            ("kv_usage", "vllm:kv_cache_usage_perc"))}
        return [{"url": self.url, "model": ctx.model_names[0], "models": list(ctx.model_names),
                 "healthy": ctx.engine.error is None, "draining": ctx.lifecycle.draining,
                 "drained_by": "replica" if ctx.lifecycle.draining else None,
                 "in_flight": ctx.engine.num_in_flight, "circuit": None, "version": None,
                 "software": self._software, **load}]

    async def drain(self, url: str, draining: bool) -> dict:
        raise ConsoleError(409, "a single replica drains on SIGTERM and then exits; drain it from the gateway's "
                                "console to keep it running", "drain_not_offered")
