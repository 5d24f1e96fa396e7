"""Console settings: one slotted dataclass, validated on construction (flags in flags.py, or YAML `console:`)."""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.protocol.settings import reject_unknown


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """How often the console samples, how much it keeps, and the SLOs goodput is measured against."""
    enabled: bool = True             # serve /console and sample in the background
    interval_s: float = 2.0          # one sample every interval
    window_s: float = 3600.0         # the ring buffer keeps this much (window / interval samples)
    rate_window_s: float = 10.0      # rates and percentiles of a sample span this much (Prometheus' rate(x[10s]))
    ttft_slo_s: float = 0.5          # a request meets the SLOs with TTFT <= this ...
    tpot_slo_s: float = 0.05         # ... and TPOT <= this (the serving bench's defaults)
    scrape_timeout_s: float = 1.0    # a replica's /metrics that takes longer counts as missing for that sample

    def __post_init__(self) -> None:
        for name in ("interval_s", "window_s", "rate_window_s", "ttft_slo_s", "tpot_slo_s", "scrape_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"console.{name}: must be a positive number, got {value!r}")
        if self.window_s < self.interval_s:
            raise ValueError(f"console.window_s: must be at least interval_s ({self.interval_s}), "
                             f"got {self.window_s}")
        if not isinstance(self.enabled, bool):
            raise ValueError(f"console.enabled: must be true or false, got {self.enabled!r}")

    @property
    def rate_span(self) -> int:
        """Intervals a sample's rates span: rate_window_s rounded to whole intervals, at least one."""
        return max(1, round(self.rate_window_s / self.interval_s))

    @property
    def capacity(self) -> int:
        """Samples the ring buffer holds."""
        return int(self.window_s // self.interval_s)

    @classmethod
    def from_dict(cls, data) -> "ConsoleConfig":
        if isinstance(data, ConsoleConfig):
            return data
        if not isinstance(data, dict):
            raise ValueError("console: must be a mapping of console settings")
        reject_unknown(data, cls.__slots__, "console")
        return cls(**data)
