"""The ring buffer of console samples (window / interval of them), and the JSON the charts read from it."""
from __future__ import annotations

from collections import deque

from llmfleet.console.sample import Sample

# chart id -> (title, unit, scope): "fleet" charts exist everywhere, "gateway" ones only on a gateway
CHARTS = {
    "requests": ("Request rate", "req/s", "fleet"),
    "tokens": ("Token throughput", "tok/s", "fleet"),
    "ttft": ("Time to first token", "ms", "fleet"),
    "tpot": ("Time per output token", "ms", "fleet"),
    "e2e": ("End-to-end latency", "ms", "fleet"),
    "queue": ("Queue time", "ms", "fleet"),
    "goodput": ("Goodput within the SLOs", "req/s", "fleet"),
    "slo": ("Share within SLO", "%", "fleet"),
    "running": ("Running requests per replica", "requests", "fleet"),
    "waiting": ("Waiting requests per replica", "requests", "fleet"),
    "kv": ("KV-cache usage per replica", "%", "fleet"),
    "prefix": ("Prefix-cache hit rate", "%", "fleet"),
    "routing": ("Routing per replica", "req/s", "gateway"),
    "retries": ("Retries and broken streams", "/s", "gateway"),
    "circuit": ("Circuit state", "0 closed · 1 half-open · 2 open", "gateway"),
    "splits": ("Canary and tier splits", "req/s", "gateway"),
}


class Timeline:
    """The last `capacity` samples, each stamped with its time (seconds since the epoch)."""

    def __init__(self, capacity: int):
        self._samples: deque[tuple[float, Sample]] = deque(maxlen=capacity)

    def append(self, at: float, values: Sample) -> None:
        self._samples.append((at, values))

    def __len__(self) -> int:
        return len(self._samples)

    def latest(self) -> tuple[float, Sample] | None:
        return self._samples[-1] if self._samples else None

    def since(self, after: float | None, charts: list[str]) -> dict:
        """Samples newer than `after` (all when None), as aligned columns: {"t": [...], "series": {chart:
        {line: [...]}}}; a line missing from a sample (a replica not yet known) is null there."""
        picked = [(t, s) for t, s in self._samples if after is None or t > after]
        series: dict[str, dict[str, list]] = {}
        for chart in charts:
            lines: dict[str, list] = {}
            for i, (_, values) in enumerate(picked):
                for line, value in values.get(chart, {}).items():
                    lines.setdefault(line, [None] * len(picked))[i] = _rounded(value)
            series[chart] = lines
        return {"t": [round(t, 3) for t, _ in picked], "series": series}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
