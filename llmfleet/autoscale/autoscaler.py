"""The autoscaler: signals in, a replica count (split into on-demand and spot) out, once per metrics interval.

Stateful only in what the stabilization windows and the forecast need; the same signals in the same order always
give the same decisions. Adapters (Ray Serve, KEDA / HPA, the fleet simulator) sample `FleetSignals` from the
replicas' metrics, call `decide`, and apply the count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.autoscale.forecast import SeasonalForecaster
from llmfleet.autoscale.policy import AutoscalePolicy


@dataclass(frozen=True, slots=True)
class FleetSignals:
    """What the fleet looks like at `time_s` (fleet totals; the policy divides by replicas itself)."""
    time_s: float
    ready_replicas: int        # replicas serving (not starting, not draining)
    waiting: float = 0.0       # requests waiting for a first token (the gateway's queue included)
    running: float = 0.0       # requests being decoded
    kv_usage: float = 0.0      # mean KV-cache usage of the ready replicas, a fraction
    ttft_p90_s: float = 0.0    # TTFT p90 over the last interval
    arrival_rate: float = 0.0  # requests per second over the last interval

    @property
    def idle(self) -> bool:
        return self.waiting <= 0 and self.running <= 0 and self.arrival_rate <= 0


@dataclass(frozen=True, slots=True)
class Decision:
    """How many replicas to keep, how many of them on-demand and spot, and which signal asked for the count."""
    replicas: int
    on_demand: int
    spot: int
    reason: str


class Autoscaler:
    """Turns `FleetSignals` into `Decision`s under one `AutoscalePolicy`."""

    def __init__(self, policy: AutoscalePolicy, replicas: int | None = None):
        """`replicas`: the count the fleet has now (default: the policy's initial replicas)."""
        self.policy = policy
        self.replicas = policy.start_replicas if replicas is None else replicas
        self.forecaster = SeasonalForecaster(policy.predictive) if policy.predictive else None
        self._up_since: float | None = None     # when a larger count was first recommended without a break
        self._down_since: float | None = None

    def recommend(self, s: FleetSignals) -> tuple[int, str]:
        """The count the targets ask for now (before stabilization), and the metric that asked for it."""
        current = max(s.ready_replicas, 1)
        wanted = [(self._for_target(metric, value, s, current), metric) for metric, value in
                  ((t.metric, t.value) for t in self.policy.targets)]
        if self.forecaster is not None:
            wanted.append((self._predicted(s.time_s), "predictive"))
        count, reason = max(wanted, key=lambda w: w[0], default=(0, "none"))   # ties: the first target named
        if count == 0 and not s.idle:
            count, reason = 1, "traffic"   # never zero while requests arrive or wait
        return min(max(count, self.policy.min_replicas), self.policy.max_replicas), reason

    def decide(self, s: FleetSignals) -> Decision:
        """Apply the stabilization windows to the recommendation; returns the count to keep now. Call it once per
        metrics interval, in time order (the forecast learns from each call)."""
        if self.forecaster is not None:
            self.forecaster.observe(s.time_s, s.arrival_rate)
        wanted, reason = self.recommend(s)
        if wanted > self.replicas:
            self._down_since = None
            self._up_since = s.time_s if self._up_since is None else self._up_since
            # from zero nothing serves the waiting requests: no reason to wait
            delay = 0.0 if self.replicas == 0 else self.policy.upscale_delay_s
            if s.time_s - self._up_since >= delay:
                self.replicas = self._smoothed(wanted, self.policy.upscale_smoothing_factor)
                self._up_since = None
        elif wanted < self.replicas:
            self._up_since = None
            self._down_since = s.time_s if self._down_since is None else self._down_since
            delay = self.policy.to_zero_delay_s if wanted == 0 else self.policy.downscale_delay_s
            if s.time_s - self._down_since >= delay:
                self.replicas = self._smoothed(wanted, self.policy.downscale_smoothing_factor)
                self._down_since = None
        else:
            self._up_since = self._down_since = None
        return self._split(reason)

    def _for_target(self, metric: str, value: float, s: FleetSignals, current: int) -> int:
        if metric == "ongoing":
            return math.ceil((s.running + s.waiting) / value - 1e-9)
        if metric == "waiting":
            # waiting is ~0 below saturation: it only ever asks for more than the ready replicas
            return current + math.ceil(s.waiting / value - 1e-9) if s.waiting > 0 else 0
        level = s.kv_usage if metric == "kv" else s.ttft_p90_s
        return math.ceil(current * level / value - 1e-9) if s.ready_replicas else 0

    def _predicted(self, now: float) -> int:
        config = self.policy.predictive
        rate = self.forecaster.forecast(now + config.lead_s)
        return 0 if rate is None else math.ceil(rate * (1 + config.headroom) / config.requests_per_replica - 1e-9)

    def _smoothed(self, wanted: int, factor: float) -> int:
        """Move `factor` of the way to `wanted` (Ray Serve's smoothing factors); 1 moves all the way."""
        step = (wanted - self.replicas) * factor
        moved = self.replicas + (math.ceil(step) if step > 0 else math.floor(step))
        return min(max(moved, self.policy.min_replicas), self.policy.max_replicas)

    def _split(self, reason: str) -> Decision:
        on_demand = self.replicas if not self.policy.spot else min(self.replicas, self.policy.on_demand_floor)
        return Decision(self.replicas, on_demand, self.replicas - on_demand, reason)
