"""The Ray Serve fleet: fleet.yaml's `models -> versions`, each version an engine that Ray Serve runs and scales.

    host: 0.0.0.0            # Ray Serve's HTTP proxy (the OpenAI API)
    port: 8000
    policy: prefix-aware     # the request router of every version: prefix-aware | power-of-two (Ray's own)
    models:
      chat:                                  # the name clients send
        - version: v1
          weight: 90                         # traffic split, sticky per x-session-id / user (gateway/splits.py)
          engine: {model: /models/llama-8b, max_num_seqs: 64}    # EngineConfig fields
          server: {max_waiting_requests: 256}                    # ServerConfig fields of the in-process server
          replicas: {min: 1, max: 8, num_gpus: 1, target_ongoing_requests: 32, target_waiting_requests: 4,
                     target_kv_usage: 0.8, upscale_delay_s: 30, downscale_delay_s: 600}
        - {version: v2, weight: 10, engine: {model: /models/llama-8b-v2}}

Pure data: nothing here imports Ray, so a config is validated before a cluster is touched. Every ValueError names
its field, as `models.chat.v1.replicas.max: ...`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.settings import reject_unknown
from llmfleet.server.config import ServerConfig

POLICIES = ("prefix-aware", "power-of-two")
# ServerConfig fields that belong to the whole app (the ingress) or to a process of its own, not to a replica
_NOT_PER_REPLICA = ("host", "port", "served_model_names", "api_key", "metrics_public", "tenancy", "tls",
                    "allowed_origins", "allowed_methods", "allowed_headers", "allow_credentials")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """How many engine replicas a version runs, what each one needs, and what Ray Serve scales them on.

    `min == max` is a fixed replica count. Otherwise Ray Serve's autoscaler runs our policy (autoscaling.py): the
    most replicas that any of the three targets asks for: ongoing requests per replica (Ray's own signal), engine
    sequences waiting for their first token per replica, and mean KV-cache usage.
    """
    min: int = 1
    max: int = 1
    initial: int | None = None
    num_gpus: int = 0                         # per replica; all on one node (the engine's processes are children)
    num_cpus: float = 1.0
    max_ongoing_requests: int = 256           # per replica, before Ray queues requests at the router
    target_ongoing_requests: float = 32.0
    target_waiting_requests: float = 4.0
    target_kv_usage: float = 0.8
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max", "max_ongoing_requests"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        for name in ("min", "num_gpus"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {getattr(self, name)!r}")
        if self.min > self.max:
            raise ValueError(f"min: {self.min} is above max ({self.max})")
        if self.initial is not None and not (isinstance(self.initial, int) and self.min <= self.initial <= self.max):
            raise ValueError(f"initial: must be an integer in [min, max], got {self.initial!r}")
        for name in ("num_cpus", "upscale_delay_s", "downscale_delay_s"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("target_ongoing_requests", "target_waiting_requests", "look_back_period_s"):
            if not isinstance(getattr(self, name), (int, float)) or not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be a positive number, got {getattr(self, name)!r}")
        if not isinstance(self.target_kv_usage, (int, float)) or not 0 < self.target_kv_usage <= 1:
            raise ValueError(f"target_kv_usage: must be a fraction in (0, 1], got {self.target_kv_usage!r}")

    @property
    def autoscaling(self) -> bool:
        return self.min != self.max


@dataclass(frozen=True, slots=True)
class RayVersion:
    """One version of a public model: its share of the traffic and the engine its replicas run.

    Has the fields gateway.splits.TrafficSplit reads (version, weight, shadow), so the gateway's sticky split picks
    versions here too."""
    model: str                                # the public name (what clients send)
    version: str
    weight: float
    engine: EngineConfig
    server: ServerConfig
    replicas: ReplicaSettings
    shadow: float = 0.0                       # mirroring is the gateway's; always 0 here

    @property
    def deployment_name(self) -> str:
        """The Ray Serve deployment of this version: unique in the app, readable in `serve status`."""
        return f"{self.model}--{self.version}"


@dataclass(frozen=True, slots=True)
class RayFleetConfig:
    models: dict[str, tuple[RayVersion, ...]]
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "llmfleet"
    route_prefix: str = "/"
    policy: str = "prefix-aware"
    load_weight: float = 1.0                  # prefix-aware: as GatewayConfig's
    balance_ratio: float = 1.5
    approx_capacity: int = 200_000
    approx_ttl_s: float = 600.0
    max_retries: int = 2                      # a request whose replica dies before its first byte is sent again
    ingress_replicas: int = 1
    api_key: str | None = None                # required as `Authorization: Bearer` at the ingress when set
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models: at least one model with one version is needed")
        if self.policy not in POLICIES:
            raise ValueError(f"policy: unknown value {self.policy!r}; use one of {', '.join(POLICIES)}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in [0, 65535], got {self.port!r}")
        if not isinstance(self.route_prefix, str) or not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix: must start with /, got {self.route_prefix!r}")
        if not isinstance(self.app_name, str) or not _NAME.match(self.app_name):
            raise ValueError(f"app_name: letters, digits, '.', '_' and '-' only, got {self.app_name!r}")
        for name in ("ingress_replicas", "approx_capacity"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries: must be an integer >= 0, got {self.max_retries!r}")
        if not isinstance(self.load_weight, (int, float)) or self.load_weight < 0:
            raise ValueError(f"load_weight: must be >= 0, got {self.load_weight!r}")
        if not isinstance(self.balance_ratio, (int, float)) or self.balance_ratio < 1:
            raise ValueError(f"balance_ratio: must be >= 1, got {self.balance_ratio!r}")
        if not isinstance(self.approx_ttl_s, (int, float)) or not self.approx_ttl_s > 0:
            raise ValueError(f"approx_ttl_s: must be a positive number, got {self.approx_ttl_s!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key: must be a non-empty string")

    def versions(self) -> list[RayVersion]:
        return [v for versions in self.models.values() for v in versions]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RayFleetConfig":
        """From a parsed fleet.yaml mapping (see the module docstring)."""
        if not isinstance(data, dict):
            raise ValueError("config: must be a mapping")
        reject_unknown(data, (f.name for f in fields(cls)))
        return cls(**{**data, "models": parse_models(data.get("models"))})


def parse_models(data: Any) -> dict[str, tuple[RayVersion, ...]]:
    if not isinstance(data, dict) or not data:
        raise ValueError("models: must map model names to lists of versions")
    models = {}
    for name, versions in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"models: {name!r} is not a valid model name (letters, digits, '.', '_', '-')")
        if not isinstance(versions, list) or not versions or not all(isinstance(v, dict) for v in versions):
            raise ValueError(f"models.{name}: must be a non-empty list of version mappings")
        parsed = tuple(_version(name, v, i) for i, v in enumerate(versions))
        if len({v.version for v in parsed}) != len(parsed):
            raise ValueError(f"models.{name}: version names must be unique")
        if sum(v.weight for v in parsed) <= 0:
            raise ValueError(f"models.{name}: the weights add up to 0")
        models[name] = parsed
    return models


def _version(model: str, data: dict, index: int) -> RayVersion:
    version = data.get("version", f"v{index + 1}")
    where = f"models.{model}.{version}"
    if not isinstance(version, str) or not _NAME.match(version):
        raise ValueError(f"models.{model}[{index}].version: letters, digits, '.', '_', '-' only, got {version!r}")
    unknown = sorted(set(data) - {"version", "weight", "engine", "server", "replicas"})
    if unknown:
        hint = " (under Ray Serve, replicas are started from `engine`, not listed by URL)" \
            if unknown[0] == "served_model" else ""
        raise ValueError(f"{where}.{unknown[0]}: unknown version setting{hint}")
    weight = data.get("weight", 1)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"{where}.weight: must be a number >= 0, got {weight!r}")
    replicas = data.get("replicas") or {}
    if not isinstance(replicas, dict):
        raise ValueError(f"{where}.replicas: must be a mapping (min, max, num_gpus, targets, delays)")
    return RayVersion(model, version, weight, _engine(where, data.get("engine")),
                      _server(where, data.get("server") or {}, model), _build(ReplicaSettings, replicas,
                                                                             f"{where}.replicas"))


def _engine(where: str, data: Any) -> EngineConfig:
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{where}.engine: must be a mapping of engine settings with at least `model` (a folder "
                         f"or a demo model's name)")
    return _build(EngineConfig, data, f"{where}.engine")


def _server(where: str, data: Any, model: str) -> ServerConfig:
    if not isinstance(data, dict):
        raise ValueError(f"{where}.server: must be a mapping of server settings")
    for name in _NOT_PER_REPLICA:
        if name in data:
            raise ValueError(f"{where}.server.{name}: set by the Ray Serve app, not per replica")
    return _build(ServerConfig, {**data, "served_model_names": (model,)}, f"{where}.server")


def _build(cls, data: dict, where: str):
    """`cls(**data)` whose ValueErrors name the field with its place in fleet.yaml."""
    reject_unknown(data, (f.name for f in fields(cls)), where)
    try:
        return cls(**data)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


def load_config(path: str) -> RayFleetConfig:
    """fleet.yaml -> RayFleetConfig; ValueError names the bad field."""
    from llmfleet.gateway.config import load_yaml

    return RayFleetConfig.from_dict(load_yaml(path))
