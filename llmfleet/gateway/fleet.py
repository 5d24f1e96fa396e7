"""The fleet: its replicas, their active health checks, KV-event subscriptions, and picking a replica.

Each replica's /ready is polled every `health_interval_s` while it passes; after a failure the interval doubles up
to `health_max_interval_s`. A replica that (re)turns healthy has its models read from /v1/models and, where it
publishes them, its KV events followed (endpoint from the config, else from its /kv_events); its cache entries in
the index start empty, since a replica that was down may have restarted. "draining" on /ready keeps the replica's
open requests going but sends it nothing new.

Replicas may come and go at run time: those of a Kubernetes Service (`discover_k8s`) follow its EndpointSlices
(k8s_discovery.py). A replica removed keeps its open requests (they hold it); it only stops being picked.
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
from llmfleet.gateway.k8s_api import KubernetesAPI, ServiceRef
from llmfleet.gateway.k8s_discovery import EndpointSliceWatch
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
        self._configured_events: dict[str, str | None] = {r.url: r.kv_events for r in config.replicas}
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
        self._watchers: dict[str, asyncio.Task] = {}     # url -> its health-check loop
        self._discovery: list[asyncio.Task] = []

    async def start(self, api: KubernetesAPI | None = None) -> None:
        """Start health checks, and discovery for `discover_k8s` (`api`: the API server; default from the
        environment, ValueError when there is none)."""
        cfg = self.config
        self.client = ReplicaClient(cfg.connect_timeout_s, cfg.request_timeout_s, cfg.max_connections,
                                    verify=cfg.replica_verify())
        self._zmq = zmq.asyncio.Context()
        self._watchers = {rep.url: asyncio.create_task(self._watch(rep)) for rep in self.replicas}
        if cfg.discover_k8s:
            api = api or KubernetesAPI.from_environment()
            for ref in map(ServiceRef.parse, cfg.discover_k8s):
                watch = EndpointSliceWatch(ref, api, lambda urls, src=ref.source: self.follow(src, urls),
                                           cfg.k8s_port_name)
                self._discovery.append(asyncio.create_task(watch.run()))

    async def stop(self) -> None:
        await self.shadows.stop()
        tasks = [*self._discovery, *self._watchers.values()] + [task for _, task in self.subscribers.values()]
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
            (r.url in version.replicas or r.source in version.replicas) if version is not None
            else r.serves(request.model)) and request.pinned in (None, r.url)]
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

    # ---- membership -----------------------------------------------------------------------------------------
    def follow(self, source: str, urls: set[str]) -> None:
        """Make the replicas tagged `source` exactly `urls` (a discovery's latest view)."""
        current = {rep.url for rep in self.replicas if rep.source == source}
        for url in sorted(urls - current):
            self.add_replica(url, source)
        for url in sorted(current - urls):
            self.remove_replica(url)

    def add_replica(self, url: str, source: str | None = None) -> Replica | None:
        """A new replica, health-checked from now on; None if `url` is already one."""
        if any(rep.url == url for rep in self.replicas):
            return None
        rep = Replica(url, CircuitBreaker(self.config.failure_threshold, self.config.open_s), source=source)
        self._configured_events[url] = None
        self.replicas.append(rep)
        if self.client is not None:
            self._watchers[url] = asyncio.create_task(self._watch(rep))
        return rep

    def remove_replica(self, url: str) -> None:
        """Stop routing to `url`: its open requests finish; its checks, events and series go."""
        self.replicas = [rep for rep in self.replicas if rep.url != url]
        for task in (self._watchers.pop(url, None), (self.subscribers.pop(url, None) or (None, None))[1]):
            if task is not None:
                task.cancel()
        self.index.clear(url)
        self.index.precise_replicas.discard(url)
        self._configured_events.pop(url, None)
        self.metrics.forget(url)

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
