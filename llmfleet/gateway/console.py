"""The gateway as the console's source: its own registry, each replica's /metrics, and operator drains.

Replicas are scraped concurrently, each within the console's scrape timeout; one that is down or slow is
missing from that sample rather than delaying the others. A replica's llmfleet version is read from its /version
once it has answered one (and again after it was down).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from llmfleet.console.prom import Metrics
from llmfleet.console.sample import Scrape
from llmfleet.console.source import ConsoleError
from llmfleet.gateway.client import ReplicaError
from llmfleet.gateway.fleet import Fleet
from llmfleet.gateway.replica import Replica

logger = logging.getLogger(__name__)


class GatewaySource:
    kind = "gateway"
    can_drain = True

    def __init__(self, fleet: Fleet, timeout_s: float):
        self.fleet, self.timeout_s = fleet, timeout_s
        self._last: dict[str, Metrics | None] = {}
        self._software: dict[str, str] = {}

    def start(self, state: dict) -> None:
        pass  # the fleet is started by the gateway's own lifespan

    async def scrape(self) -> Scrape:
        replicas = self.fleet.replicas
        texts = await asyncio.gather(*(self._metrics_text(rep) for rep in replicas))
        own = self.fleet.metrics.render(replicas)
        # parsing a few hundred lines per replica is CPU work: off the loop that proxies requests
        parsed = await asyncio.to_thread(_parse_all, [own, *texts])
        self._last = {rep.url: metrics for rep, metrics in zip(replicas, parsed[1:])}
        return Scrape(time.time(), dict(self._last), parsed[0], self.fleet.config.policy)

    async def _metrics_text(self, rep: Replica) -> bytes | None:
        if not rep.healthy or self.fleet.client is None:
            self._software.pop(rep.url, None)
            return None
        try:
            status, body = await self.fleet.client.get(rep.url, "/metrics", self.timeout_s)
            if rep.url not in self._software:
                self._software[rep.url] = await self._version(rep)
        except ReplicaError:
            return None
        return body if status == 200 else None

    async def _version(self, rep: Replica) -> str:
        status, body = await self.fleet.client.get(rep.url, "/version", self.timeout_s)
        try:
            return str(json.loads(body).get("version")) if status == 200 else "unknown"
        except (ValueError, AttributeError):
            return "unknown"

    def replicas(self) -> list[dict]:
        versions = {url: f"{model}/{v.version}" for model, vs in self.fleet.split.models.items() for v in vs
                    for url in v.replicas}
        rows = []
        for rep in self.fleet.replicas:
            metrics = self._last.get(rep.url)
            load = {name: metrics.total(metric) if metrics else None for name, metric in (
                ("running", "vllm:num_requests_running"), ("waiting", "vllm:num_requests_waiting"),
                ("kv_usage", "vllm:kv_cache_usage_perc"))}
            rows.append({**rep.snapshot(), **load, "version": versions.get(rep.url),
                         "software": self._software.get(rep.url), "failures": rep.failures})
        return rows

    async def drain(self, url: str, draining: bool) -> dict:
        rep = next((r for r in self.fleet.replicas if r.url == url.rstrip("/")), None)
        if rep is None:
            raise ConsoleError(404, f"url: no replica {url!r} in this fleet", "replica_not_found")
        rep.operator_drained = draining
        logger.info("replica %s %s by an operator", rep.url, "drained" if draining else "undrained")
        return next(row for row in self.replicas() if row["url"] == rep.url)


def _parse_all(texts: list[bytes | None]) -> list[Metrics | None]:
    parsed = []
    for text in texts:
        try:
            parsed.append(None if text is None else Metrics.parse(text))
        except ValueError as exc:
            logger.warning("a replica's /metrics is not Prometheus text: %s", exc)
            parsed.append(None)
    return parsed
