"""Routing policies behind one interface: `choose(request, candidates) -> Replica`.

Candidates are never empty: the router passes only replicas that are healthy, not draining, with a closed (or
half-open) circuit, serving the requested model and not yet tried for this request. The prefix-aware policy
lives in prefix.py; `make_policy` builds any of them by name.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from llmfleet.gateway.replica import Replica


@dataclass(slots=True, eq=False)
class RoutingRequest:
    """What a policy may look at; `token_ids` is filled lazily by the prefix-aware policy."""
    path: str
    payload: dict
    model: str | None = None
    session_key: str | None = None
    predicted_cached_tokens: int | None = None   # set by the prefix-aware policy for the chosen replica
    version: object | None = None                # the ModelVersion of a split model (splits.py)
    tier: tuple[str, str] | None = None          # (tier model, why) for a virtual tiered model (tiers.py)
    cache: dict = field(default_factory=dict)    # per-request scratch (prompt hashes) shared across retries
    pinned: str | None = None                    # only this replica url may take it (a stored response's owner)


def session_key_of(headers, payload: dict) -> str | None:
    """The key that keeps a user's requests together: the x-session-id header, else the request's `user`."""
    user = payload.get("user")
    return headers.get("x-session-id") or (user if isinstance(user, str) and user else None)


class Policy(Protocol):
    name: str

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica: ...


def least_loaded(candidates: list[Replica]) -> Replica:
    """Fewest in-flight; ties go to the one routed least (spreads a cold start)."""
    return min(candidates, key=lambda r: (r.in_flight, r.routed))


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica:
        return candidates[next(self._counter) % len(candidates)]


class LeastLoaded:
    name = "least-loaded"

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica:
        return least_loaded(candidates)


class PowerOfTwo:
    """Two replicas at random, the less loaded of them: near least-loaded balance without herding on one."""
    name = "power-of-two"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        return least_loaded(self._rng.sample(candidates, 2))


class SessionAffinity:
    """Consistent hashing of the session key (x-session-id header, else the request's `user`) with bounded load:
    walking the ring from the key's point, the first replica whose in-flight count stays within
    `load_factor` x the mean (rounded up) takes it. Without a key it routes least-loaded."""
    name = "session"

    def __init__(self, load_factor: float = 1.25, virtual_nodes: int = 100) -> None:
        self.load_factor, self.virtual_nodes = load_factor, virtual_nodes
        self._ring: list[tuple[int, str]] = []
        self._members: frozenset[str] = frozenset()

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica:
        if request.session_key is None:
            return least_loaded(candidates)
        by_url = {r.url: r for r in candidates}
        self._rebuild(by_url)
        total = sum(r.in_flight for r in candidates) + 1
        bound = math.ceil(self.load_factor * total / len(candidates))
        start = bisect.bisect(self._ring, (_point(request.session_key), ""))
        seen: set[str] = set()
        for i in range(len(self._ring)):
            url = self._ring[(start + i) % len(self._ring)][1]
            if url in seen:
                continue
            seen.add(url)
            if by_url[url].in_flight + 1 <= bound:
                return by_url[url]
        return least_loaded(candidates)

    def _rebuild(self, by_url: dict[str, Replica]) -> None:
        members = frozenset(by_url)
        if members != self._members:
            self._members = members
            self._ring = sorted((_point(f"{url}#{i}"), url) for url in members for i in range(self.virtual_nodes))


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def make_policy(name: str, config, index=None, hasher=None) -> Policy:
    """The policy called `name` (GatewayConfig.policy); prefix-aware needs the index and the prompt hasher."""
    if name == "round-robin":
        return RoundRobin()
    if name == "least-loaded":
        return LeastLoaded()
    if name == "power-of-two":
        return PowerOfTwo()
    if name == "session":
        return SessionAffinity(config.session_load_factor)
    if name == "prefix-aware":
        from llmfleet.gateway.prefix import PrefixAware
        return PrefixAware(index, hasher, config.load_weight, config.balance_ratio)
    raise ValueError(f"policy: unknown value {name!r}")
