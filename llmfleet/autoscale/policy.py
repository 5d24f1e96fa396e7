"""The autoscaling policy: what to track, the targets, the stabilization windows, the floor. Plain validated data.

Field names follow Ray Serve's `AutoscalingConfig` (min/max/initial_replicas, target_ongoing_requests,
upscale_delay_s, downscale_delay_s, downscale_to_zero_delay_s, smoothing factors), so the Ray Serve adapter passes
them through and the Kubernetes adapter maps them onto KEDA / HPA (threshold per trigger, stabilization windows).
One object drives both, and the fleet simulator (`llmfleet autoscale simulate`) runs the same `Autoscaler` on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# metric -> what one replica reports (the Prometheus series the adapters read)
METRICS = {
    "ongoing": "running + waiting requests per replica (Ray Serve's ongoing requests)",
    "waiting": "requests waiting for their first token per replica (vllm:num_requests_waiting)",
    "kv": "KV-cache usage, a fraction of the replica's blocks (vllm:kv_cache_usage_perc)",
    "ttft_p90": "the fleet's time to first token, 90th percentile, seconds",
}


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a positive number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be a number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Target:
    """Track `metric` at `value` per replica (a fraction for kv, seconds for ttft_p90)."""
    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"targets.metric: must be one of {', '.join(METRICS)}, got {self.metric!r}")
        _positive(f"targets[{self.metric}].value", self.value)
        if self.metric == "kv" and self.value > 1:
            raise ValueError(f"targets[kv].value: a fraction of the KV cache in (0, 1], got {self.value!r}")


@dataclass(frozen=True, slots=True)
class PredictiveConfig:
    """Order replicas ahead of a load that repeats every `period_s` (diurnal by default).

    The forecaster learns the arrival rate per `bin_s` slot of the period from what it observed in earlier periods
    and asks for enough replicas, `lead_s` ahead, to carry that rate at `requests_per_replica` each plus `headroom`.
    `lead_s` should cover the start-up time and the upscale delay. Until a slot has been seen once, it predicts
    nothing there and the reactive targets decide alone.
    """
    requests_per_replica: float             # req/s one replica is sized for (from `bench serve` at the SLO)
    period_s: float = 86400.0
    bin_s: float = 300.0
    lead_s: float = 300.0
    headroom: float = 0.1
    smoothing: float = 0.5                  # weight of the newest period in each slot's rate

    def __post_init__(self) -> None:
        for name in ("requests_per_replica", "period_s", "bin_s"):
            _positive(f"predictive.{name}", getattr(self, name))
        for name in ("lead_s", "headroom"):
            _non_negative(f"predictive.{name}", getattr(self, name))
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"predictive.smoothing: must be in (0, 1], got {self.smoothing!r}")
        if self.bin_s > self.period_s:
            raise ValueError(f"predictive.bin_s: must not exceed period_s ({self.period_s}), got {self.bin_s}")


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    """Target tracking with stabilization windows, scale to zero, and an on-demand floor under spot replicas.

    Each target recommends a replica count; the largest wins (as HPA does with several metrics). A change is
    applied only once it has been recommended for `upscale_delay_s` (up) or `downscale_delay_s` (down) without a
    break, as Ray Serve does. Scaling to zero waits `downscale_to_zero_delay_s`; left unset, it is the longer of
    the downscale delay and the cold-start break-even `cold_start_s * cold_start_weight` (keep the last replica
    idle for as long as a restart would cost). The first `on_demand_floor` replicas are on-demand; replicas above
    it are spot when `spot` is set.
    """
    name: str = "queue"
    targets: tuple[Target, ...] = (Target("ongoing", 16.0),)   # Ray Serve LLM's default target
    min_replicas: int = 1
    max_replicas: int = 100
    initial_replicas: int | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None
    upscale_smoothing_factor: float = 1.0
    downscale_smoothing_factor: float = 1.0
    cold_start_s: float = 20.0              # a replica's start-up: requests arriving at zero replicas wait this long
    cold_start_weight: float = 10.0         # replica-seconds one second of cold start is worth (waiting requests)
    on_demand_floor: int = 0
    spot: bool = False
    predictive: PredictiveConfig | None = None
    metrics_interval_s: float = 10.0        # how often the adapter samples the signals and asks for a decision

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must be a non-empty string")
        if not self.targets and self.predictive is None and self.min_replicas != self.max_replicas:
            raise ValueError("targets: give at least one target, a predictive config, or min = max replicas")
        if len({t.metric for t in self.targets}) != len(self.targets):
            raise ValueError("targets: one target per metric")
        for name in ("min_replicas", "on_demand_floor"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.max_replicas, int) or self.max_replicas < max(1, self.min_replicas):
            raise ValueError(f"max_replicas: must be an integer >= max(1, min_replicas), got {self.max_replicas!r}")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas: must be within [min_replicas, max_replicas], got "
                             f"{self.initial_replicas!r}")
        if self.on_demand_floor > self.max_replicas:
            raise ValueError(f"on_demand_floor: must not exceed max_replicas, got {self.on_demand_floor}")
        for name in ("upscale_delay_s", "downscale_delay_s", "cold_start_s", "cold_start_weight"):
            _non_negative(name, getattr(self, name))
        if self.downscale_to_zero_delay_s is not None:
            _non_negative("downscale_to_zero_delay_s", self.downscale_to_zero_delay_s)
        for name in ("upscale_smoothing_factor", "downscale_smoothing_factor", "metrics_interval_s"):
            _positive(name, getattr(self, name))

    @property
    def start_replicas(self) -> int:
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas

    @property
    def to_zero_delay_s(self) -> float:
        """How long the fleet must be idle before its last replica goes."""
        if self.downscale_to_zero_delay_s is not None:
            return self.downscale_to_zero_delay_s
        return max(self.downscale_delay_s, self.cold_start_s * self.cold_start_weight)

    def target(self, metric: str) -> float | None:
        return next((t.value for t in self.targets if t.metric == metric), None)

    def ray_autoscaling_config(self) -> dict:
        """The fields Ray Serve's `autoscaling_config` takes (its target is ongoing requests per replica)."""
        config = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                  "initial_replicas": self.start_replicas, "upscale_delay_s": self.upscale_delay_s,
                  "downscale_delay_s": self.downscale_delay_s, "downscale_to_zero_delay_s": self.to_zero_delay_s,
                  "upscale_smoothing_factor": self.upscale_smoothing_factor,
                  "downscale_smoothing_factor": self.downscale_smoothing_factor,
                  "metrics_interval_s": self.metrics_interval_s}
        if self.target("ongoing") is not None:
            config["target_ongoing_requests"] = self.target("ongoing")
        return config


def policy_from_dict(data: dict) -> AutoscalePolicy:
    """An AutoscalePolicy from plain data (a YAML / JSON file): targets as {metric: value}, predictive as a dict."""
    data = dict(data)
    unknown = set(data) - set(AutoscalePolicy.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown policy field")
    targets = data.get("targets")
    if isinstance(targets, dict):
        data["targets"] = tuple(Target(metric, value) for metric, value in targets.items())
    elif targets is not None and not all(isinstance(t, Target) for t in targets):
        raise ValueError("targets: must be a mapping of metric to value, e.g. {ongoing: 48}")
    if isinstance(data.get("predictive"), dict):
        data["predictive"] = PredictiveConfig(**data["predictive"])
    return AutoscalePolicy(**data)


@dataclass(frozen=True, slots=True)
class _Preset:
    description: str
    fields: dict = field(default_factory=dict)


PRESETS = {
    # tuned on the bursty trace with llama3-8b's curves (docs/autoscaling.md): 48 ongoing is ~10 req/s per
    # replica, 2/3 of its SLO rate; a short upscale delay because a replica starts in seconds
    "queue": _Preset("ongoing (running + waiting) and waiting requests per replica",
                     {"targets": {"ongoing": 48.0, "waiting": 16.0}, "upscale_delay_s": 10.0}),
    "ray-default": _Preset("Ray Serve LLM's defaults: 16 ongoing requests per replica, 30 s up, 600 s down",
                           {"targets": {"ongoing": 16.0}}),
    "kv": _Preset("KV-cache usage per replica", {"targets": {"kv": 0.5, "waiting": 4.0}}),
    "ttft": _Preset("TTFT p90 of the fleet", {"targets": {"ttft_p90": 0.25}}),
}


def static(replicas: int, **overrides) -> AutoscalePolicy:
    """A fixed fleet of `replicas` (peak provisioning, the baseline autoscaling is measured against)."""
    return AutoscalePolicy(name="static", targets=(), min_replicas=replicas, max_replicas=replicas, **overrides)


def preset(name: str, /, **overrides) -> AutoscalePolicy:
    """A named policy (`queue`, `ray-default`, `kv`, `ttft`) with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"policy: unknown preset {name!r}; one of {', '.join(PRESETS)} or a YAML file")
    return policy_from_dict({"name": name, **PRESETS[name].fields, **overrides})
