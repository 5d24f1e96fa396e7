"""Weighted splits of one public model name across versions (canary, A/B), sticky per user.

In fleet.yaml:

    models:
      chat:                                   # the name clients send
        - {version: v1, weight: 95, replicas: [http://a:8000, http://b:8000]}
        - {version: v2, weight: 5, replicas: [http://c:8000], served_model: tiny-v2}

A request for `chat` goes to one version: by a hash of its session key (x-session-id, else `user`) into [0, 1)
against the cumulative weights, so a user keeps its version while the weights stay; without a key, at random.
The body's `model` is rewritten to `served_model`, or to the chosen replica's own model name when that is unset.

A version with `shadow: F` (a fraction in (0, 1]) takes no traffic of its own (its weight is 0 unless given):
a fraction F of the model's requests is also sent to it, its answers discarded (logged on the
`llmfleet.gateway.shadow` logger), its latency and status counted in the metrics (shadow.py):

        - {version: v3, shadow: 0.1, replicas: [http://d:8000]}
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelVersion:
    version: str
    weight: float
    replicas: tuple[str, ...]       # base URLs, or k8s://SERVICE[.NAMESPACE]: that Service's endpoints
    served_model: str | None = None
    shadow: float = 0.0       # fraction of the model's requests mirrored to this version (answers discarded)

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise ValueError("models.version: must be a non-empty string")
        if not isinstance(self.weight, (int, float)) or self.weight < 0:
            raise ValueError(f"models.weight: must be a number >= 0, got {self.weight!r}")
        if not self.replicas:
            raise ValueError(f"models.replicas: version {self.version!r} lists no replica")
        if any(not str(url).startswith(("http://", "https://", "k8s://")) for url in self.replicas):
            raise ValueError(f"models.replicas: version {self.version!r} has a URL without http://, https:// "
                             "or k8s:// (a Kubernetes Service)")
        if not isinstance(self.shadow, (int, float)) or not 0 <= self.shadow <= 1:
            raise ValueError(f"models.shadow: version {self.version!r} needs a fraction in [0, 1], got {self.shadow!r}")
        object.__setattr__(self, "replicas", tuple(str(url).rstrip("/") for url in self.replicas))


def _version(v: dict) -> ModelVersion:
    unknown = sorted(set(v) - {"version", "weight", "replicas", "served_model", "shadow"})
    if unknown:
        raise ValueError(f"models.{unknown[0]}: unknown version setting")
    shadow = v.get("shadow", 0.0)
    return ModelVersion(v.get("version"), v.get("weight", 0 if shadow else 1), tuple(v.get("replicas") or ()),
                        v.get("served_model"), shadow)


def parse_models(data: Any) -> dict[str, tuple[ModelVersion, ...]]:
    """`models` from fleet.yaml; ValueError names the field."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("models: must map model names to lists of versions")
    models = {}
    for name, versions in data.items():
        if not isinstance(versions, list) or not versions:
            raise ValueError(f"models.{name}: must be a non-empty list of versions")
        if any(not isinstance(v, dict) for v in versions):
            raise ValueError(f"models.{name}: each version is a mapping (version, weight, replicas)")
        parsed = tuple(_version(v) for v in versions)
        if len({v.version for v in parsed}) != len(parsed):
            raise ValueError(f"models.{name}: version names must be unique")
        if sum(v.weight for v in parsed) <= 0:
            raise ValueError(f"models.{name}: the weights add up to 0")
        models[str(name)] = parsed
    return models


class TrafficSplit:
    def __init__(self, models: dict[str, tuple[ModelVersion, ...]], seed: int | None = None):
        self.models = models
        self.has_shadows = any(v.shadow for versions in models.values() for v in versions)
        self._rng = random.Random(seed)

    def names(self) -> list[str]:
        return sorted(self.models)

    def version_for(self, model: str | None, key: str | None) -> ModelVersion | None:
        """The version a request for `model` goes to; None when `model` has no split."""
        versions = self.models.get(model) if model else None
        if not versions:
            return None
        point = _unit(f"{model}\0{key}") if key else self._rng.random()
        total = sum(v.weight for v in versions)
        cumulative = 0.0
        for version in versions:
            cumulative += version.weight / total
            if point < cumulative:
                return version
        return next(v for v in reversed(versions) if v.weight > 0)

    def shadows_for(self, model: str | None) -> list[ModelVersion]:
        """The shadow versions this request of `model` is mirrored to (each drawn with its own fraction)."""
        versions = self.models.get(model) if model else None
        if not versions:
            return []
        return [v for v in versions if v.shadow and self._rng.random() < v.shadow]


def body_for(route, rep, body: bytes) -> bytes:
    """The client's bytes, except that a split model's name becomes the version's (or the replica's) own."""
    if route.version is None:
        return body
    served = route.version.served_model or (rep.models[0] if rep.models else route.model)
    return json.dumps({**route.payload, "model": served}).encode()


def _unit(key: str) -> float:
    """A stable point in [0, 1) for `key`."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0 ** 64
