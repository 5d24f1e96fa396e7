"""The fleet simulator: a load trace, a replica model and a policy, stepped in fixed time steps; a fluid model.

Requests are aggregated per step, never simulated one by one. Each step of `step_s` seconds:
1. start-ups and drains that are due end; spot replicas may get a preemption notice (they stop taking requests);
2. the step's arrivals (Poisson around the trace's rate, seeded) join one FIFO queue in front of the ready
   replicas, which the gateway is taken to load evenly; they admit up to `capacity_rps` each per second;
3. the autoscaler sees the signals an adapter would scrape (waiting = the queue, running by Little's law from
   the measured end-to-end latency, KV usage from the tokens a running request holds, TTFT p90) every
   `metrics_interval_s` and the fleet is reconciled to its decision; every replica not off is billed.
Afterwards each request's queueing delay is read off the cumulative arrival and admission curves (FIFO), and its
TTFT is that delay plus the replica's measured TTFT distribution at the load it ran under (`replica_model`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llmfleet.autoscale.autoscaler import Autoscaler, FleetSignals
from llmfleet.autoscale.fleet import READY, STARTING, FleetSlots, SpotMarket
from llmfleet.autoscale.policy import AutoscalePolicy
from llmfleet.autoscale.replica_model import ReplicaModel, within

SAMPLES_PER_STEP = 8   # arrival instants per step at which the queueing delay is read


@dataclass(frozen=True, slots=True)
class Prices:
    """Per GPU-hour. The defaults are examples of H200 list and spot prices, not quotes: give your own."""
    on_demand_gpu_hour: float = 4.00
    spot_gpu_hour: float = 1.60

    def __post_init__(self) -> None:
        for name in ("on_demand_gpu_hour", "spot_gpu_hour"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"prices.{name}: must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class SimConfig:
    step_s: float = 10.0
    ttft_slo_s: float = 0.5
    seed: int = 0
    poisson: bool = True                 # arrivals per step ~ Poisson(rate x step); False: exactly rate x step
    prices: Prices = field(default_factory=Prices)
    spot: SpotMarket = field(default_factory=SpotMarket)

    def __post_init__(self) -> None:
        for name in ("step_s", "ttft_slo_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)!r}")


@dataclass(slots=True)
class Series:
    """Per-step time series (arrays of one value per step), and the run's spot counts."""
    time_s: np.ndarray
    rate: np.ndarray              # offered req/s
    arrivals: np.ndarray          # requests arriving in the step
    admitted: np.ndarray          # requests admitted (first token on the way) in the step
    queue: np.ndarray             # waiting at the step's end
    ready: np.ndarray
    live: np.ndarray              # starting + ready
    target: np.ndarray            # the autoscaler's count
    billed_on_demand: np.ndarray  # replicas billed in the step (starting, ready or draining)
    billed_spot: np.ndarray
    per_replica_rate: np.ndarray  # admitted req/s per ready replica
    preemptions: int = 0
    fallbacks: int = 0            # launches that wanted spot and got on-demand (spot unavailable)


_RECORDED = ("arrivals", "admitted", "queue", "ready", "live", "target", "billed_on_demand", "billed_spot",
             "per_replica_rate")


def simulate(rate: np.ndarray, model: ReplicaModel, policy: AutoscalePolicy, config: SimConfig) -> Series:
    """Step the fleet through `rate` (req/s per step); returns the series `report.summarize` reads."""
    run = _Run(np.asarray(rate, float), model, policy, config)
    for i in range(run.rate.size):
        run.step(i)
    return Series(time_s=np.arange(run.rate.size) * config.step_s, rate=run.rate, **run.out,
                  preemptions=run.slots.preemptions, fallbacks=run.slots.fallbacks)


class _Run:
    """One simulation's state: the queue, the slots, the autoscaler, and the arrays being filled."""

    def __init__(self, rate: np.ndarray, model: ReplicaModel, policy: AutoscalePolicy, config: SimConfig):
        rng = np.random.default_rng(config.seed)
        self.rate, self.model, self.policy, self.config = rate, model, policy, config
        self.arrivals = rng.poisson(rate * config.step_s).astype(float) if config.poisson else rate * config.step_s
        self.slots = FleetSlots(policy.max_replicas, rng, model.startup_s)
        self.scaler = Autoscaler(policy, _warm_start(policy, model, rate[0], config.ttft_slo_s))
        self.every = max(1, round(policy.metrics_interval_s / config.step_s))
        self.queue, self.target = 0.0, self.scaler.replicas
        self._reconcile(0.0)
        self.slots.state[self.slots.state == STARTING] = READY   # the trace begins mid-operation: warm
        self.out = {name: np.zeros(rate.size) for name in _RECORDED}

    def step(self, i: int) -> None:
        now, dt, slots = i * self.config.step_s, self.config.step_s, self.slots
        slots.advance(now)
        slots.preempt(now, dt, self.config.spot)
        ready = slots.count(READY)
        admitted = min(self.queue + self.arrivals[i], ready * self.model.capacity_rps * dt)
        self.queue += self.arrivals[i] - admitted
        per_replica = admitted / dt / ready if ready else 0.0
        if i % self.every == 0:
            signals = _signals(now, ready, self.queue, per_replica, self.arrivals[i] / dt, self.model)
            self.target = self.scaler.decide(signals).replicas
        self._reconcile(now)
        table = slots.table()   # [spot][state]; billed: every state but off
        values = (self.arrivals[i], admitted, self.queue, ready, table[:, STARTING:READY + 1].sum(), self.target,
                  table[0, STARTING:].sum(), table[1, STARTING:].sum(), per_replica)
        for name, value in zip(_RECORDED, values):
            self.out[name][i] = value

    def _reconcile(self, now: float) -> None:
        self.slots.reconcile(now, self.target, self.policy.on_demand_floor, self.policy.spot, self.model.e2e_s[-1])


def _warm_start(policy: AutoscalePolicy, model: ReplicaModel, first_rate: float, slo_s: float) -> int:
    """The trace begins mid-operation: unless the policy names its initial replicas, the fleet starts with enough
    for the first step's rate at the replica's SLO rate (as if it had been scaling all along)."""
    if policy.initial_replicas is not None:
        return policy.initial_replicas
    needed = math.ceil(first_rate / max(model.slo_rate(slo_s), 1e-9) - 1e-9)
    return min(max(needed, policy.min_replicas), policy.max_replicas)


def _signals(now: float, ready: int, queue: float, per_replica: float, arrival_rate: float,
             model: ReplicaModel) -> FleetSignals:
    """What an adapter would scrape: the queue, running requests by Little's law, KV usage, TTFT p90."""
    rate = np.asarray([per_replica])
    running_per_replica = per_replica * float(model.curve("e2e_s", rate)[0])
    wait = queue / (ready * model.capacity_rps) if ready else (model.startup_s[1] if queue else 0.0)
    kv = running_per_replica * model.kv_per_running() / model.kv_tokens
    return FleetSignals(time_s=now, ready_replicas=ready, waiting=queue, running=ready * running_per_replica,
                        kv_usage=min(kv, 1.0), ttft_p90_s=float(model.curve("ttft_p90_s", rate)[0]) + wait,
                        arrival_rate=arrival_rate)


def queueing_delays(series: Series, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step index, requests, delay s) at SAMPLES_PER_STEP arrival instants per step, FIFO on the cumulative
    curves; requests never admitted by the trace's end get an infinite delay."""
    times = np.arange(series.time_s.size + 1) * dt
    cum_arrived = np.concatenate([[0.0], np.cumsum(series.arrivals)])
    cum_admitted = np.concatenate([[0.0], np.cumsum(series.admitted)])
    frac = (np.arange(SAMPLES_PER_STEP) + 0.5) / SAMPLES_PER_STEP
    step = np.repeat(np.arange(series.time_s.size), SAMPLES_PER_STEP)
    k = cum_arrived[step] + np.tile(frac, series.time_s.size) * series.arrivals[step]
    arrived_at = times[step] + np.tile(frac, series.time_s.size) * dt
    j = np.clip(np.searchsorted(cum_admitted, k - 1e-9, side="left"), 1, times.size - 1)
    seg = np.maximum(cum_admitted[j] - cum_admitted[j - 1], 1e-12)
    admitted_at = times[j - 1] + np.clip((k - cum_admitted[j - 1]) / seg, 0.0, 1.0) * dt
    delay = np.where(k > cum_admitted[-1] + 1e-6, np.inf, np.maximum(admitted_at - arrived_at, 0.0))
    return step, series.arrivals[step] / SAMPLES_PER_STEP, delay


def ttft_within(series: Series, model: ReplicaModel, config: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per step: requests within the TTFT SLO, and the mean queueing delay of the step's arrivals."""
    step, weight, delay = queueing_delays(series, config.step_s)
    rate = series.per_replica_rate[step]
    ok = within(model, rate, np.where(np.isfinite(delay), config.ttft_slo_s - delay, -1.0)) * weight
    steps = series.time_s.size
    finite = np.where(np.isfinite(delay), delay, 0.0)
    mean_delay = np.bincount(step, finite, steps) / SAMPLES_PER_STEP
    return np.bincount(step, ok, steps), mean_delay
