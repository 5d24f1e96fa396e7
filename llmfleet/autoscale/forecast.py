"""A seasonal forecast of the arrival rate: one smoothed rate per slot of the period, learned from earlier periods."""
from __future__ import annotations

from llmfleet.autoscale.policy import PredictiveConfig


class SeasonalForecaster:
    """`observe(t, rate)` in time order; `forecast(t)` is the rate the same slot had in earlier periods, or None.

    A slot's value is folded in when the slot ends (its mean rate), exponentially smoothed across periods with
    `config.smoothing`. The slot now running is never its own forecast: a forecast comes from a full earlier period.
    """

    def __init__(self, config: PredictiveConfig):
        self.config = config
        self.slots = max(1, round(config.period_s / config.bin_s))
        self._profile: list[float | None] = [None] * self.slots
        self._slot: int | None = None   # absolute slot index (time // bin_s) being accumulated
        self._sum = 0.0
        self._count = 0

    def observe(self, time_s: float, rate: float) -> None:
        slot = int(time_s // self.config.bin_s)
        if self._slot is not None and slot != self._slot:
            self._fold()
        if self._slot != slot:
            self._slot, self._sum, self._count = slot, 0.0, 0
        self._sum += rate
        self._count += 1

    def forecast(self, time_s: float) -> float | None:
        """The rate expected at `time_s` (in the future), from the same slot of earlier periods."""
        return self._profile[int(time_s // self.config.bin_s) % self.slots]

    def _fold(self) -> None:
        index = self._slot % self.slots
        mean = self._sum / self._count
        old = self._profile[index]
        a = self.config.smoothing
        self._profile[index] = mean if old is None else (1 - a) * old + a * mean
