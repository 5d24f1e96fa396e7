"""Shadow traffic: a copy of a request sent to a shadow version (splits.py, `shadow: F`), off the client's path.

The copy is sent as its own task once the request is routed, so it adds nothing to the client's latency; its answer
is read whole and discarded, with one line on the `llmfleet.gateway.shadow` logger. What it measured goes to
`llmfleet_gateway_shadow_requests_total{version,status}` (status: the HTTP code, `no_replica`, or
`error:<what failed>`) and `llmfleet_gateway_shadow_latency_seconds{version}`. Its outcome counts for the shadow
replica's own circuit breaker and in-flight load, never for the client's request.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from llmfleet.gateway.client import ReplicaError
from llmfleet.gateway.policies import RoutingRequest
from llmfleet.gateway.splits import ModelVersion, body_for

if TYPE_CHECKING:
    from llmfleet.gateway.fleet import Fleet

logger = logging.getLogger("llmfleet.gateway.shadow")


class Shadows:
    def __init__(self, fleet: "Fleet"):
        self.fleet = fleet
        self.tasks: set[asyncio.Task] = set()

    def mirror(self, route: RoutingRequest, path: str, body: bytes, headers: dict) -> None:
        """Start one copy per shadow version drawn for this request."""
        for version in self.fleet.split.shadows_for(route.model):
            task = asyncio.create_task(self._send(version, route, path, body, headers))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, version: ModelVersion, route: RoutingRequest, path: str, body: bytes,
                    headers: dict) -> None:
        fleet = self.fleet
        copy = RoutingRequest(route.path, route.payload, route.model, route.session_key, version=version)
        rep = fleet.pick(copy, [])
        if rep is None:
            fleet.metrics.shadow_requests.labels(version.version, "no_replica").inc()
            return
        rep.in_flight += 1
        rep.breaker.on_send()
        start = time.perf_counter()
        content = b""
        try:
            upstream = await fleet.client.send("POST", rep.url, path, body_for(copy, rep, body), headers)
            content = await upstream.read()
            status = str(upstream.status_code)
            (rep.breaker.failure if upstream.status_code >= 500 else rep.breaker.success)()
        except ReplicaError as exc:
            status = f"error:{type(exc).__name__}"
            rep.breaker.failure()
        finally:
            rep.in_flight -= 1
        elapsed = time.perf_counter() - start
        fleet.metrics.shadow_requests.labels(version.version, status).inc()
        fleet.metrics.shadow_latency.labels(version.version).observe(elapsed)
        logger.info("shadow %s via %s: %s in %.1f ms: %s", version.version, rep.url, status, elapsed * 1e3,
                    content[:500].decode("utf-8", "replace"))

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
