"""fleet.yaml's `deployment:` section: what `llmfleet deploy render` builds for Kubernetes. Every ValueError names
its field.

The gateway's own settings say which engines exist: each Service named `k8s://SERVICE` in `replicas` or in a model
version's `replicas` is one engine group, and `deployment.engines.SERVICE` says what it runs:

    models:
      chat:
        - {version: v1, weight: 90, replicas: ["k8s://chat-v1"]}
        - {version: v2, weight: 10, replicas: ["k8s://chat-v2"]}
    deployment:
      image: ghcr.io/acme/llmfleet          # tags: TAG-cpu and TAG-cuda (deploy/docker/)
      min_replicas: 2                       # defaults for every engine below; each may override them
      max_replicas: 8
      spot_fraction: 0.5
      engines:
        chat-v1: {model: /models/chat-v1}
        chat-v2: {model: /models/chat-v2, min_replicas: 1, max_replicas: 2, spot_fraction: 0}

Autoscaling: each group's AutoscalePolicy (llmfleet.deploy.policy) comes from its bounds, floor, `target_waiting`
and an optional `autoscale:` (a preset such as `queue`, or policy fields), and drives its ScaledObject or HPA.

Spot: `spot_fraction` of an engine's minimum runs on spot nodes; the rest, ceil(min x (1 - fraction)), is an
on-demand floor of fixed size, and the autoscaler grows and shrinks the spot Deployment above it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from llmfleet.autoscale.policy import AutoscalePolicy
from llmfleet.deploy.policy import engine_policy
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.k8s_api import ServiceRef
from llmfleet.protocol.settings import reject_unknown

AUTOSCALERS = ("keda", "hpa", "none")
ENGINE_FIELDS = ("model", "served_model_name", "min_replicas", "max_replicas", "spot_fraction", "gpus_per_replica",
                 "target_waiting", "autoscale", "args", "cpu", "memory")
DEFAULTABLE = ("min_replicas", "max_replicas", "spot_fraction", "gpus_per_replica", "target_waiting", "autoscale",
               "cpu", "memory")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine group: a headless Service, its Deployments (on-demand floor, spot), PDB and autoscaler."""
    service: str                          # the Service name the gateway discovers (k8s://service)
    model: str                            # `llmfleet serve --model`: a folder (e.g. on the model volume) or name
    served_model_name: str | None = None  # `--served-model-name` (default: the model's own name)
    min_replicas: int = 1                 # pods; the autoscaler never goes below
    max_replicas: int = 4
    spot_fraction: float = 0.0            # share of min_replicas on spot nodes; the rest is an on-demand floor
    gpus_per_replica: int = 4             # multi-gpu overlay: GPUs (one engine each) per pod
    target_waiting: float | None = None   # the policy's waiting target (4 when nothing else names targets)
    autoscale: Any = None                 # a preset's name or policy fields (llmfleet.deploy.policy)
    args: tuple[str, ...] = ()            # more `llmfleet serve` flags (e.g. --max-model-len 8192)
    cpu: str = "2"                        # CPU overlay: the engine container's requests
    memory: str = "8Gi"

    def __post_init__(self) -> None:
        where = f"deployment.engines.{self.service}"
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"{where}.model: the model `llmfleet serve` loads is required")
        for name in ("min_replicas", "max_replicas", "gpus_per_replica"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}.{name}: must be an integer >= 1, got {value!r}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"{where}.max_replicas: {self.max_replicas} is below min_replicas {self.min_replicas}")
        if isinstance(self.spot_fraction, bool) or not isinstance(self.spot_fraction, (int, float)) \
                or not 0 <= self.spot_fraction <= 1:
            raise ValueError(f"{where}.spot_fraction: must be a fraction in [0, 1], got {self.spot_fraction!r}")
        if self.spot_fraction and self.max_replicas <= self.on_demand_floor:
            raise ValueError(f"{where}.spot_fraction: the on-demand floor ({self.on_demand_floor}) takes all of "
                             f"max_replicas ({self.max_replicas}), leaving no spot replica")
        if self.target_waiting is not None and (isinstance(self.target_waiting, bool) or not isinstance(
                self.target_waiting, (int, float)) or self.target_waiting <= 0):
            raise ValueError(f"{where}.target_waiting: must be a number > 0, got {self.target_waiting!r}")
        if not isinstance(self.args, (list, tuple)) or any(not isinstance(a, str) for a in self.args):
            raise ValueError(f"{where}.args: must be a list of strings (llmfleet serve flags)")
        object.__setattr__(self, "args", tuple(self.args))
        for name in ("cpu", "memory"):
            if not isinstance(getattr(self, name), (str, int)):
                raise ValueError(f"{where}.{name}: must be a Kubernetes quantity such as 2 or 8Gi")
            object.__setattr__(self, name, str(getattr(self, name)))
        self.policy  # noqa: B018 (a bad autoscale entry fails here, at load)

    @property
    def on_demand_floor(self) -> int:
        """Pods that always run on on-demand nodes (0 when everything may run on spot)."""
        return math.ceil(self.min_replicas * (1 - self.spot_fraction) - 1e-9)

    @property
    def policy(self) -> AutoscalePolicy:
        """The group's autoscaling policy, which its ScaledObject or HPA is rendered from."""
        return engine_policy(self.service, self.autoscale, (self.min_replicas, self.max_replicas),
                             self.on_demand_floor, self.spot_fraction > 0, self.target_waiting)

    @property
    def autoscaled(self) -> str:
        """Which Deployment the autoscaler drives: the spot one when there is spot capacity."""
        return "spot" if self.spot_fraction else "on-demand"


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    image: str                            # repository; the overlays tag it TAG-cpu or TAG-cuda
    engines: tuple[EngineSpec, ...]
    tag: str = "0.1.0"
    namespace: str = "llmfleet"
    gateway_replicas: int = 2
    autoscaler: str = "keda"              # keda (ScaledObject) | hpa (needs prometheus-adapter) | none
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"   # what KEDA queries
    drain_timeout_s: int = 30             # `--drain-timeout`: in-flight requests' time after SIGTERM
    prestop_sleep_s: int = 5              # endpoint removal reaches the gateways before SIGTERM
    model_pvc: str | None = None          # a PersistentVolumeClaim with the weights, mounted read-only at /models
    gateway_secret: str | None = None     # a Secret whose keys become the gateway's environment (if it exists):
    #                                       LLMFLEET_MASTER_KEY, LLMFLEET_DATABASE_URL, ... turn tenancy on

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image or ":" in self.image.rsplit("/", 1)[-1]:
            raise ValueError(f"deployment.image: a repository without a tag (the overlays add TAG-cpu / "
                             f"TAG-cuda), got {self.image!r}")
        if not isinstance(self.tag, str) or not self.tag:
            raise ValueError(f"deployment.tag: must be a non-empty image tag, got {self.tag!r}")
        ServiceRef.parse(self.namespace, "deployment.namespace")
        if isinstance(self.gateway_replicas, bool) or not isinstance(self.gateway_replicas, int) \
                or self.gateway_replicas < 1:
            raise ValueError(f"deployment.gateway_replicas: must be an integer >= 1, got {self.gateway_replicas!r}")
        if self.autoscaler not in AUTOSCALERS:
            raise ValueError(f"deployment.autoscaler: unknown value {self.autoscaler!r}; use one of "
                             f"{', '.join(AUTOSCALERS)}")
        if not isinstance(self.prometheus_url, str) or not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"deployment.prometheus_url: must be an http(s) URL, got {self.prometheus_url!r}")
        for name in ("drain_timeout_s", "prestop_sleep_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"deployment.{name}: must be a whole number of seconds >= 0, got {value!r}")
        for name in ("model_pvc", "gateway_secret"):
            if getattr(self, name) is not None:
                ServiceRef.parse(getattr(self, name), f"deployment.{name}")   # a DNS label, as object names are
        if not self.engines:
            raise ValueError("deployment.engines: no engine; name Services as k8s://SERVICE in replicas or in a "
                             "model version's replicas, and describe each under deployment.engines")

    @property
    def termination_grace_s(self) -> int:
        """The pod's grace period: the preStop sleep, the drain, and time for the process to exit."""
        return self.prestop_sleep_s + self.drain_timeout_s + 15


def deployment_spec(gateway: GatewayConfig) -> DeploymentSpec:
    """The `deployment:` section of a parsed fleet.yaml, checked against the Services its gateway discovers."""
    data = gateway.deployment
    if data is None:
        raise ValueError("deployment: fleet.yaml has no deployment section (image, engines, ...)")
    reject_unknown(data, {f.name for f in fields(DeploymentSpec)} | set(DEFAULTABLE), "deployment")
    namespace = data.get("namespace", "llmfleet")
    engines = _engines(data, gateway.discover_k8s, namespace)
    settings = {k: v for k, v in data.items() if k not in DEFAULTABLE and k != "engines"}
    return DeploymentSpec(engines=engines, **settings)


def _engines(data: dict[str, Any], services: tuple[str, ...], namespace: str) -> tuple[EngineSpec, ...]:
    described = data.get("engines") or {}
    if not isinstance(described, dict):
        raise ValueError("deployment.engines: must map Service names to engine settings")
    wanted = []
    for ref in map(ServiceRef.parse, services):
        if ref.namespace not in (None, namespace):
            raise ValueError(f"deployment.namespace: {ref.source} is in namespace {ref.namespace}, the rendered "
                             f"engines in {namespace}")
        wanted.append(ref.name)
    for name in described:
        if name not in wanted:
            raise ValueError(f"deployment.engines.{name}: no replicas entry or model version names k8s://{name}")
    defaults = {k: data[k] for k in DEFAULTABLE if k in data}
    engines = []
    for name in dict.fromkeys(wanted):
        own = described.get(name)
        if not isinstance(own, dict):
            raise ValueError(f"deployment.engines.{name}: k8s://{name} is routed to, so it needs its settings "
                             "(at least model)")
        unknown = sorted(set(own) - set(ENGINE_FIELDS))
        if unknown:
            raise ValueError(f"deployment.engines.{name}.{unknown[0]}: unknown engine setting")
        engines.append(EngineSpec(service=name, **{**defaults, **own}))
    return tuple(engines)
