"""Gateway settings: slotted dataclasses validated on construction, filled from `llmfleet gateway` flags or one
YAML file (`--config fleet.yaml`). Every ValueError names its field."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from llmfleet.apps.config import AppsConfig
from llmfleet.console.config import ConsoleConfig
from llmfleet.gateway.k8s_api import SCHEME as K8S_SCHEME, ServiceRef
from llmfleet.gateway.splits import ModelVersion, parse_models
from llmfleet.gateway.tiers import Tier, parse_tiers
from llmfleet.protocol.settings import reject_unknown
from llmfleet.protocol.tls import TLSConfig
from llmfleet.tenancy.config import TenancyConfig

POLICIES = ("prefix-aware", "round-robin", "least-loaded", "power-of-two", "session")


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """One OpenAI-compatible replica. `kv_events` (a ZeroMQ endpoint) overrides what its /kv_events reports."""
    url: str
    kv_events: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"replicas.url: must start with http:// or https://, got {self.url!r}")
        if self.url.endswith("/"):
            object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.kv_events is not None and not self.kv_events.startswith(("tcp://", "ipc://")):
            raise ValueError(f"replicas.kv_events: must start with tcp:// or ipc://, got {self.kv_events!r}")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    replicas: tuple[ReplicaConfig, ...]
    policy: str = "prefix-aware"
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    # prefix-aware routing
    tokenizer: str | None = None        # folder with tokenizer.json (or a demo model name); None: no prompt hashing
    block_size: int = 16                # the replicas' KV block size: hashes must match theirs
    load_weight: float = 1.0            # how much a replica's relative load costs against its cached fraction
    balance_ratio: float = 1.5          # hot-prefix guard: a replica above ratio x the least in-flight gets no more
    approx_capacity: int = 200_000      # block hashes the routing-history index keeps (LRU)
    approx_ttl_s: float = 600.0         # ... and for how long
    kv_events: bool = True              # subscribe to replicas' KV events where they publish them
    # session routing
    session_load_factor: float = 1.25   # bounded load: a replica above factor x mean in-flight is skipped
    # reliability
    health_interval_s: float = 0.5      # /ready polls while healthy; doubling up to health_max_interval_s otherwise
    health_max_interval_s: float = 2.0
    health_timeout_s: float = 1.0
    max_retries: int = 2                # other replicas tried when one fails before its first byte
    failure_threshold: int = 3          # consecutive failures that open a replica's circuit
    open_s: float = 2.0                 # first open period; doubles on each failed trial, up to 30 s
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 600.0
    max_connections: int = 1000
    # traffic management: public model name -> weighted versions (splits.py); their replicas join `replicas`
    models: dict[str, tuple[ModelVersion, ...]] = field(default_factory=dict)
    # tiered routing: virtual model name -> tiers, cheapest first (tiers.py)
    tiers: dict[str, tuple[Tier, ...]] = field(default_factory=dict)
    # security: keys, limits, budgets and spend in front of the proxy; HTTPS; the CA bundle replicas are checked by
    tenancy: TenancyConfig | None = None
    tls: TLSConfig | None = None
    replica_ca_certs: str | None = None  # PEM bundle for https:// replicas (None: the system's CAs)
    # Kubernetes: Services (SERVICE[.NAMESPACE]) whose ready endpoints are replicas, found from their EndpointSlices
    # (k8s_discovery.py); `k8s://SERVICE` in `replicas` or a version's replicas lands here too
    discover_k8s: tuple[str, ...] = ()
    k8s_port_name: str = "http"         # the Service port (and port-N for multi-engine pods) replicas answer on
    # what `llmfleet deploy render` builds from this file (llmfleet/deploy/spec.py); the gateway ignores it
    deployment: dict | None = None
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # /console: sampling and SLOs
    apps: AppsConfig | None = None       # semantic cache, conversations (llmfleet/apps), inside tenancy

    def __post_init__(self) -> None:
        if not self.replicas and not self.discover_k8s:
            raise ValueError("replicas: at least one replica URL (or a Service in discover_k8s) is needed")
        object.__setattr__(self, "discover_k8s", tuple(dict.fromkeys(
            ServiceRef.parse(ref).source.removeprefix(K8S_SCHEME) for ref in self.discover_k8s)))
        if not isinstance(self.k8s_port_name, str) or not self.k8s_port_name:
            raise ValueError(f"k8s_port_name: must be a port name, got {self.k8s_port_name!r}")
        if self.deployment is not None and not isinstance(self.deployment, dict):
            raise ValueError("deployment: must be a mapping (see llmfleet deploy render)")
        if len({r.url for r in self.replicas}) != len(self.replicas):
            raise ValueError("replicas: the same URL is listed twice")
        if self.policy not in POLICIES:
            raise ValueError(f"policy: unknown value {self.policy!r}; use one of {', '.join(POLICIES)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in [0, 65535], got {self.port}")
        for name in ("block_size", "approx_capacity", "failure_threshold", "max_connections"):
            _positive_int(self, name)
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries: must be an integer >= 0, got {self.max_retries!r}")
        for name in ("approx_ttl_s", "health_interval_s", "health_max_interval_s", "health_timeout_s", "open_s",
                     "connect_timeout_s", "request_timeout_s"):
            _positive_number(self, name)
        if self.load_weight < 0:
            raise ValueError(f"load_weight: must be >= 0, got {self.load_weight}")
        if self.balance_ratio < 1.0:
            raise ValueError(f"balance_ratio: must be >= 1, got {self.balance_ratio}")
        if self.session_load_factor < 1.0:
            raise ValueError(f"session_load_factor: must be >= 1, got {self.session_load_factor}")
        if self.replica_ca_certs is not None and not os.path.isfile(self.replica_ca_certs):
            raise ValueError(f"replica_ca_certs: no such file {self.replica_ca_certs!r}")
        if self.tenancy is not None and not isinstance(self.tenancy, TenancyConfig):
            raise ValueError("tenancy: must be a TenancyConfig (or a mapping of its fields in YAML)")
        if not isinstance(self.console, ConsoleConfig):
            raise ValueError("console: must be a ConsoleConfig (or a mapping of its fields in YAML)")

    def replica_verify(self) -> bool | str:
        """What the replica client verifies https:// replicas with: the CA bundle's path, or True (system CAs)."""
        return True if self.replica_ca_certs is None else self.replica_ca_certs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GatewayConfig":
        """From a parsed YAML mapping: `replicas` is a list of URLs or {url, kv_events} mappings; `models` maps
        public names to weighted versions, whose replicas are added to `replicas`."""
        if not isinstance(data, dict):
            raise ValueError("config: must be a mapping")
        reject_unknown(data, (f.name for f in fields(cls)))
        entries = list(data.get("replicas") or [])
        models = parse_models(data.get("models"))
        entries += [url for versions in models.values() for v in versions for url in v.replicas]
        services = list(data.get("discover_k8s") or ())
        services += [e for e in entries if isinstance(e, str) and e.startswith(K8S_SCHEME)]
        replicas, listed = [], set()
        for i, item in enumerate(entries):
            if isinstance(item, str) and item.startswith(K8S_SCHEME):
                continue
            replica = _replica(item, i)
            if replica.url not in listed:
                replicas.append(replica)
                listed.add(replica.url)
        tenancy = data.get("tenancy")
        if isinstance(tenancy, dict):
            tenancy = TenancyConfig(**tenancy)
        console = ConsoleConfig.from_dict(data.get("console") or {})
        apps = data.get("apps")
        if isinstance(apps, dict):
            apps = AppsConfig.from_dict(apps)
        return cls(**{**data, "replicas": tuple(replicas), "models": models, "tiers": parse_tiers(data.get("tiers")),
                      "tenancy": tenancy, "discover_k8s": tuple(services), "console": console, "apps": apps})


def load_yaml(path: str) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping of settings")
    return data


def _replica(item: Any, index: int) -> ReplicaConfig:
    if isinstance(item, ReplicaConfig):
        return item
    if isinstance(item, str):
        return ReplicaConfig(item)
    if isinstance(item, dict) and set(item) <= {"url", "kv_events"} and "url" in item:
        return ReplicaConfig(**item)
    raise ValueError(f"replicas[{index}]: must be a URL or a mapping with url and optionally kv_events")


def _positive_int(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _positive_number(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: must be a positive number, got {value!r}")


def parse_replica_flag(value: str) -> ReplicaConfig:
    """`URL` or `URL,kv_events=tcp://host:port` (the --replica flag)."""
    url, _, rest = value.partition(",")
    extra = dict(part.split("=", 1) for part in rest.split(",") if "=" in part) if rest else {}
    if set(extra) - {"kv_events"}:
        raise ValueError(f"replicas: unknown option in {value!r}; only kv_events=ENDPOINT is known")
    return ReplicaConfig(url, extra.get("kv_events"))
