"""The fleet: its replicas, their active health checks, KV-event subscriptions, and picking a replica.

Each replica's /ready is polled every `health_interval_s` while it passes; after a failure the interval doubles up
to `health_max_interval_s`. A replica that (re)turns healthy has its models read from /v1/models and, where it
publishes them, its KV events followed (endpoint from the config, else from its /kv_events); its cache entries in
the index start empty, since a replica that was down may have restarted. "draining" on /ready keeps the replica's
open requests going but sends it nothing new.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import urlsplit

import zmq.asyncio

from llmfleet.gateway.client import ReplicaClient, ReplicaError
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.index import PrefixIndex
from llmfleet.gateway.kv_subscriber import KVEventSubscriber
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.policies import RoutingRequest, make_policy
from llmfleet.gateway.prompts import PromptHasher
from llmfleet.gateway.replica import CircuitBreaker, Replica
from llmfleet.gateway.shadow import Shadows
from llmfleet.gateway.splits import TrafficSplit
from llmfleet.gateway.tiers import TierRouter

logger = logging.getLogger(__name__)


class Fleet:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.replicas = [Replica(r.url, CircuitBreaker(config.failure_threshold, config.open_s), r.kv_events)
                         for r in config.replicas]
        self._configured_events = {r.url: r.kv_events for r in config.replicas}
        self.index = PrefixIndex(config.approx_capacity, config.approx_ttl_s)
        self.hasher = PromptHasher(config.tokenizer, config.block_size) if config.tokenizer else None
        self.policy = make_policy(config.policy, config, self.index, self.hasher)
        self.metrics = GatewayMetrics(config.policy)
        self.split = TrafficSplit(config.models)
        self.tiers = TierRouter(config.tiers, self.hasher)
        self.shadows = Shadows(self)
        self.client: ReplicaClient | None = None
        self.subscribers: dict[str, tuple[KVEventSubscriber, asyncio.Task]] = {}
        self._zmq: zmq.asyncio.Context | None = None
        self._watchers: list[asyncio.Task] = []

    async def start(self) -> None:
        cfg = self.config
        self.client = ReplicaClient(cfg.connect_timeout_s, cfg.request_timeout_s, cfg.max_connections,
                                    verify=cfg.replica_verify())
        self._zmq = zmq.asyncio.Context()
        self._watchers = [asyncio.create_task(self._watch(rep)) for rep in self.replicas]

    async def stop(self) -> None:
        await self.shadows.stop()
        tasks = self._watchers + [task for _, task in self.subscribers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()
        self._zmq.term()

    # ---- routing --------------------------------------------------------------------------------------------
    def pick(self, request: RoutingRequest, exclude: list[Replica]) -> Replica | None:
        """The policy's choice among available replicas serving the model, `exclude` left out; None if none."""
        now = time.monotonic()
        version = request.version
        candidates = [r for r in self.replicas if r not in exclude and r.available(now) and (
            r.url in version.replicas if version is not None else r.serves(request.model))
            and request.pinned in (None, r.url)]
        return self.policy.choose(request, candidates) if candidates else None

    def knows(self, model: str) -> bool:
        """Whether some replica, split or tier serves `model` (True while no replica has listed its models)."""
        if model in self.split.models or model in self.tiers.tiers:
            return True
        listed = [rep.models for rep in self.replicas if rep.models]
        if not listed and not self.split.models and not self.tiers.tiers:
            return True
        return any(model in models for models in listed)

    def models(self) -> list[str]:
        served = {name for rep in self.replicas for name in rep.models}
        return sorted(served | set(self.split.models) | set(self.tiers.tiers))

    def model_cards(self) -> list[dict]:
        cards: dict[str, dict] = {}
        for name in [*self.split.models, *self.tiers.tiers]:
            cards[name] = {"id": name, "object": "model", "created": 0, "owned_by": "llmfleet"}
        for rep in self.replicas:
            for card in rep.cards:
                cards.setdefault(card.get("id"), card)
        return [cards[name] for name in sorted(cards, key=str)]

    # ---- health ---------------------------------------------------------------------------------------------
    async def _watch(self, rep: Replica) -> None:
        interval = self.config.health_interval_s
        while True:
            passed = await self.check(rep)
            interval = self.config.health_interval_s if passed else min(
                interval * 2, self.config.health_max_interval_s)
            await asyncio.sleep(interval)

    async def check(self, rep: Replica) -> bool:
        """One /ready probe; updates the replica's health and draining state."""
        try:
            status, body = await self.client.get(rep.url, "/ready", self.config.health_timeout_s)
        except ReplicaError:
            return self._down(rep)
        if status == 200:
            if not rep.healthy:
                await self._up(rep)
            rep.draining = False
            return True
        if status == 503 and _status(body) == "draining":
            rep.draining = True
            return True
        return self._down(rep)

    def _down(self, rep: Replica) -> bool:
        if rep.healthy:
            logger.warning("replica %s failed its health check: out of rotation", rep.url)
        rep.healthy = False
        return False

    async def _up(self, rep: Replica) -> None:
        try:
            cards = json.loads((await self.client.get(rep.url, "/v1/models", self.config.health_timeout_s))[1])
            rep.cards = [c for c in cards.get("data", []) if isinstance(c, dict)]
            rep.models = tuple(str(c.get("id")) for c in rep.cards)
            rep.instance = cards.get("instance") if isinstance(cards.get("instance"), str) else None
        except (ReplicaError, ValueError, AttributeError):
            logger.warning("replica %s: /v1/models did not answer a model list", rep.url)
        await self._follow_events(rep)
        rep.breaker.probe_passed()   # back from down: one trial request decides, whatever the open timer says
        rep.healthy = True
        logger.info("replica %s is healthy (models: %s)", rep.url, ", ".join(rep.models) or "unknown")

    async def _follow_events(self, rep: Replica) -> None:
        old = self.subscribers.pop(rep.url, None)
        if old is not None:
            old[1].cancel()
        self.index.clear(rep.url)
        endpoint = self._configured_events[rep.url] or await self._discover_events(rep)
        rep.kv_events = endpoint
        if endpoint is None or self.hasher is None:
            self.index.precise_replicas.discard(rep.url)
            return
        sub = KVEventSubscriber(rep.url, endpoint, self.index, self._zmq,
                                on_gap=lambda url, n: self.metrics.kv_events_lost.labels(url).inc(n))
        self.subscribers[rep.url] = (sub, asyncio.create_task(sub.run()))

    async def _discover_events(self, rep: Replica) -> str | None:
        if not self.config.kv_events:
            return None
        try:
            status, body = await self.client.get(rep.url, "/kv_events", self.config.health_timeout_s)
            info = json.loads(body) if status == 200 else None
        except (ReplicaError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("endpoint"), str):
            return None
        if info.get("block_size", self.config.block_size) != self.config.block_size:
            logger.warning("replica %s uses KV block size %s, the gateway %d: its events are not followed",
                           rep.url, info.get("block_size"), self.config.block_size)
            return None
        return _reachable(info["endpoint"], rep.url)


def _status(answer: bytes) -> str | None:
    try:
        body = json.loads(answer)
    except ValueError:
        return None
    return body.get("status") if isinstance(body, dict) else None


def _reachable(endpoint: str, replica_url: str) -> str:
    """A wildcard bind address (tcp://0.0.0.0:P, tcp://*:P) means: the replica's own host."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            return f"tcp://{urlsplit(replica_url).hostname}:{endpoint[len(wildcard):]}"
    return endpoint
