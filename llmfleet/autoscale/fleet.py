"""The simulated fleet's replicas, one slot each in numpy arrays: starting, ready, draining, off; spot or on-demand.

Per step the simulator advances the slots (start-ups end, drains end), draws spot preemptions, reconciles the
count with the autoscaler's decision (as a Deployment controller or a Ray Serve controller does: lost replicas
are replaced at once) and bills every slot that is not off. Everything is vectorized over the slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFF, STARTING, READY, DRAINING = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class SpotMarket:
    """How spot replicas are lost. Defaults are examples, not a provider's figures."""
    preemptions_per_hour: float = 0.05   # per spot replica
    notice_s: float = 120.0              # warning before the machine goes (AWS: 2 minutes, GCE: 30 s)
    unavailable_s: float = 900.0         # after a preemption, new launches fall back to on-demand this long

    def __post_init__(self) -> None:
        for name in ("preemptions_per_hour", "notice_s", "unavailable_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"spot.{name}: must be a number >= 0, got {value!r}")


class FleetSlots:
    """`size` replica slots; the randomness (start-up times, preemptions) comes from `rng` alone."""

    def __init__(self, size: int, rng: np.random.Generator, startup_s: tuple[float, float]):
        self.state = np.zeros(size, np.int8)
        self.ready_at = np.full(size, np.inf)
        self.gone_at = np.full(size, np.inf)
        self.spot = np.zeros(size, bool)
        self.rng, self.startup_s = rng, startup_s
        self.spot_unavailable_until = -np.inf
        self.preemptions = 0
        self.fallbacks = 0   # launches that wanted spot and got on-demand

    def table(self) -> np.ndarray:
        """Slots per [spot][state]: one pass over the slots for every count a step needs."""
        return np.bincount(self.state + 4 * self.spot, minlength=8).reshape(2, 4)

    def count(self, *states: int, spot: bool | None = None) -> int:
        table = self.table()
        rows = table if spot is None else table[int(spot)]
        return int(rows[..., list(states)].sum())

    def _live_mask(self) -> np.ndarray:
        return (self.state == STARTING) | (self.state == READY)

    @property
    def live(self) -> int:
        """Replicas kept: starting or ready (draining ones are on their way out)."""
        return self.count(STARTING, READY)

    def advance(self, now: float) -> None:
        self.state[(self.state == STARTING) & (self.ready_at <= now)] = READY
        done = (self.state == DRAINING) & (self.gone_at <= now)
        self.state[done] = OFF
        self.ready_at[done] = self.gone_at[done] = np.inf

    def preempt(self, now: float, step_s: float, market: SpotMarket) -> int:
        """Spot replicas hit in this step get the notice: they drain and are gone when it runs out."""
        probability = 1.0 - np.exp(-market.preemptions_per_hour * step_s / 3600.0)
        hit = self.spot & self._live_mask() & (self.rng.random(self.state.size) < probability)
        count = int(np.count_nonzero(hit))
        if count:
            self.state[hit], self.gone_at[hit] = DRAINING, now + market.notice_s
            self.spot_unavailable_until = now + market.unavailable_s
            self.preemptions += count
        return count

    def reconcile(self, now: float, target: int, on_demand_floor: int, want_spot: bool, drain_s: float) -> None:
        """Launch or stop replicas until `target` are live, the first `on_demand_floor` of them on-demand."""
        live = self.live
        if live > target:
            self._stop(live - target, now, drain_s, min(target, on_demand_floor) if want_spot else target)
            return
        missing_on_demand = max(min(target, on_demand_floor) - self.count(STARTING, READY, spot=False), 0)
        extra = target - live
        on_demand = min(missing_on_demand, extra) if want_spot else extra
        self._launch(on_demand, False, now)
        if extra > on_demand:
            spot_ok = now >= self.spot_unavailable_until
            self.fallbacks += 0 if spot_ok else extra - on_demand
            self._launch(extra - on_demand, spot_ok, now)

    def _launch(self, count: int, spot: bool, now: float) -> None:
        free = np.flatnonzero(self.state == OFF)[:count]
        if free.size:
            low, high = self.startup_s
            self.state[free], self.spot[free] = STARTING, spot
            self.ready_at[free] = now + self.rng.uniform(low, high, free.size)

    def _stop(self, count: int, now: float, drain_s: float, keep_on_demand: int) -> None:
        """Stop starting replicas first (they serve nothing yet), then on-demand ones above the floor (the dearer),
        then spot ones; the floor's `keep_on_demand` go last."""
        live = np.flatnonzero(self._live_mask())
        starting, spot = self.state[live] == STARTING, self.spot[live]
        priority = np.where(starting, 0, np.where(spot, 2, 1))
        on_demand = np.flatnonzero(~spot)
        priority[on_demand[:keep_on_demand]] = 3   # the floor (starting ones among them too)
        chosen = live[np.argsort(priority, kind="stable")[:count]]
        was_starting = chosen[self.state[chosen] == STARTING]
        self.state[was_starting], self.ready_at[was_starting] = OFF, np.inf
        serving = chosen[self.state[chosen] == READY]
        self.state[serving], self.gone_at[serving] = DRAINING, now + drain_s
