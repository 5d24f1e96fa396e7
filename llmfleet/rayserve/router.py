"""The gateway's prefix-aware policy as Ray Serve's request router of an engine deployment.

Ray Serve runs a request router in every process that holds a handle to the deployment (here: the ingress
replicas). For each request it asks `choose_replicas` for ranked candidates, probes the first rank's queue
lengths and sends the request to one that accepts it (below `max_ongoing_requests`), else tries the next rank.
This router puts the replica that the gateway's PrefixAware policy picks (gateway/prefix.py: most cached leading
blocks of the prompt, unless that replica is busier; the hot-prefix guard) alone in the first rank, and every other
candidate, least loaded first, in the second.

The prompt's block hashes come from the version's tokenizer, exactly as the gateway computes them
(gateway/prompts.py). What each replica caches is learnt from this router's own routing history (the gateway's
approximate index), and load is the requests this router has open on each replica, as in the gateway.
Replicas that already failed this request (EngineRequest.avoid) are left out while any other remains.
"""
from __future__ import annotations

import logging
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from llmfleet.gateway.index import PrefixIndex
from llmfleet.gateway.policies import RoutingRequest
from llmfleet.gateway.prefix import PrefixAware
from llmfleet.gateway.prompts import PromptHasher
from llmfleet.gateway.replica import CircuitBreaker, Replica
from llmfleet.rayserve.request import EngineRequest

logger = logging.getLogger(__name__)


class PrefixAwareRouter(RequestRouter):
    def initialize_state(self, tokenizer: str | None = None, block_size: int = 16, load_weight: float = 1.0,
                         balance_ratio: float = 1.5, approx_capacity: int = 200_000, approx_ttl_s: float = 600.0,
                         **_: Any) -> None:
        """Called by Ray Serve with the deployment's `request_router_kwargs` (app.py)."""
        hasher = None
        if tokenizer is not None:
            try:
                hasher = PromptHasher(tokenizer, block_size)
            except ValueError as exc:  # e.g. a benchmark shape without a tokenizer: route on load alone
                logger.warning("prefix-aware routing without prompt hashes: %s", exc)
        self.index = PrefixIndex(approx_capacity, approx_ttl_s)
        self.policy = PrefixAware(self.index, hasher, load_weight, balance_ratio)
        self.views: dict[str, Replica] = {}

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:   # every candidate is ranked: when all are full, wait before asking again
            pending_request.routing_context.should_backoff = True
        request = _engine_request(pending_request)
        if request is not None and request.avoid:
            candidate_replicas = [r for r in candidate_replicas
                                  if r.replica_id.unique_id not in request.avoid] or candidate_replicas
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        views = [self._view(replica_id) for replica_id in by_id]
        if request is None:   # a call that is not an OpenAI request (stats, tests): least loaded first, in turn
            return [[by_id[v.url]] for v in sorted(views, key=_load)]
        if request.routing is None:   # Ray may ask again (all replicas full): the prompt is hashed once
            request.routing = RoutingRequest(request.path, request.payload)
        chosen = self.policy.choose(request.routing, views)
        rest = [by_id[v.url] for v in sorted(views, key=_load) if v is not chosen]
        return [[by_id[chosen.url]], rest] if rest else [[by_id[chosen.url]]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        view = self._view(replica_id.unique_id)
        view.in_flight += 1
        view.routed += 1
        request = _engine_request(pending_request)
        if request is not None:
            request.replica = replica_id.unique_id

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        view = self.views.get(replica_id.unique_id)
        if view is not None and view.in_flight > 0:
            view.in_flight -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.views.pop(replica_id.unique_id, None)
        self.index.clear(replica_id.unique_id)

    def _view(self, replica_id: str) -> Replica:
        """The gateway policy's picture of a replica (its `url` is the Ray replica id)."""
        view = self.views.get(replica_id)
        if view is None:
            view = self.views[replica_id] = Replica(replica_id, CircuitBreaker(), healthy=True)
        return view


def _engine_request(pending_request: PendingRequest | None) -> EngineRequest | None:
    args = pending_request.args if pending_request is not None else None
    return args[0] if args and isinstance(args[0], EngineRequest) else None


def _load(view: Replica) -> tuple[int, int]:
    return view.in_flight, view.routed
