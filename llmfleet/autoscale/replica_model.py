"""One replica as the simulator sees it, built from the project's own measurements on the GPU it runs on.

- Latency vs load: `llmfleet bench serve` (W3) records, TTFT p50/p90/p99 and mean end-to-end latency at each
  offered rate. Points above the saturation rate are left out: those runs (a few hundred requests) never reach a
  steady state there, and the simulator models overload as a queue instead. Between points the quantiles are
  interpolated linearly; past the last point they follow the last segment's slope (never falling).
- Saturation rate (`capacity_rps`): `bench offline` W1 output tokens per second (the median of the records)
  over the output tokens per request of the W3 runs.
- Start-up: the range of `ready_s` over the offline records of the shape, any workload (weights loaded, KV
  sized, CUDA graphs captured).
- KV capacity: the offline records' KV blocks x block size.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nvidia-h200"


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """Measured curves of one replica (one engine on `gpus` GPUs). Rates are requests per second per replica."""
    shape: str
    rates: tuple[float, ...]
    ttft_p50_s: tuple[float, ...]
    ttft_p90_s: tuple[float, ...]
    ttft_p99_s: tuple[float, ...]
    e2e_s: tuple[float, ...]                 # mean end-to-end latency: with the rate, Little's law gives running
    capacity_rps: float
    input_tokens: float                      # per request (W3's lengths)
    output_tokens: float
    kv_tokens: int
    startup_s: tuple[float, float]           # uniform between these
    gpus: int = 1
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.rates)
        if n < 2 or list(self.rates) != sorted(set(self.rates)):
            raise ValueError("rates: need at least two distinct increasing measured rates")
        for name in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "e2e_s"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: one value per rate ({n}), got {len(getattr(self, name))}")
        for name in ("capacity_rps", "input_tokens", "output_tokens", "kv_tokens", "gpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)!r}")
        lo, hi = self.startup_s
        if not 0 <= lo <= hi:
            raise ValueError(f"startup_s: need 0 <= low <= high, got {self.startup_s!r}")

    def with_startup(self, low: float, high: float) -> "ReplicaModel":
        """The same replica with another start-up time (e.g. another engine's, measured elsewhere)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return ReplicaModel(**{**fields, "startup_s": (float(low), float(high))})

    def curve(self, name: str, rate: np.ndarray) -> np.ndarray:
        """`name` (ttft_p50_s, ..., e2e_s) at each per-replica `rate`, extrapolated past the last point."""
        xs, ys = np.asarray(self.rates), np.asarray(getattr(self, name))
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
        inside = np.interp(rate, xs, ys)
        return np.where(rate > xs[-1], ys[-1] + slope * (rate - xs[-1]), inside)

    def slo_rate(self, ttft_slo_s: float, quantile: str = "ttft_p99_s") -> float:
        """The highest rate per replica whose TTFT `quantile` stays within the SLO, not past the last measured
        rate (what a static fleet is sized for: no extrapolation)."""
        grid = np.linspace(0.0, min(self.capacity_rps, self.rates[-1]), 2001)
        ok = grid[self.curve(quantile, grid) <= ttft_slo_s]
        return float(ok[-1]) if ok.size else 0.0

    def kv_per_running(self) -> float:
        """KV tokens a running request holds on average: its prompt and half its output."""
        return self.input_tokens + self.output_tokens / 2


def within(model: ReplicaModel, rate: np.ndarray, budget_s: np.ndarray) -> np.ndarray:
    """The fraction of requests whose TTFT at per-replica `rate` is at most `budget_s` (vectorized).

    The CDF runs linearly through (0, 0), (p50, .5), (p90, .9), (p99, .99), then an exponential tail whose scale
    matches the p90-p99 segment. A budget below zero (the request already waited longer in a queue) gives 0.
    """
    p50, p90, p99 = (model.curve(q, rate) for q in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s"))
    x = np.asarray(budget_s, dtype=float)
    tail_scale = np.maximum(p99 - p90, 1e-6) / np.log(10.0)
    below50 = 0.5 * x / np.maximum(p50, 1e-9)
    to90 = 0.5 + 0.4 * (x - p50) / np.maximum(p90 - p50, 1e-9)
    to99 = 0.9 + 0.09 * (x - p90) / np.maximum(p99 - p90, 1e-9)
    tail = 1.0 - 0.01 * np.exp(-np.maximum(x - p99, 0.0) / tail_scale)
    cdf = np.where(x <= p50, below50, np.where(x <= p90, to90, np.where(x <= p99, to99, tail)))
    return np.clip(np.where(x < 0, 0.0, cdf), 0.0, 1.0)


def load_replica_model(shape: str, results_dir: Path | str = DEFAULT_RESULTS) -> ReplicaModel:
    """The newest `serve-w3-<shape>` record and the `offline-w1-<shape>` records of `results_dir`."""
    folder = Path(results_dir)
    serve_files = sorted(folder.glob(f"serve-w3-{shape}-*.json"))
    offline_files = [p for p in sorted(folder.glob(f"offline-w1-{shape}-*.json")) if _plain(p)]
    if not serve_files or not offline_files:
        raise ValueError(f"shape: no serve-w3-{shape}-*.json / offline-w1-{shape}-*.json records in {folder}")
    ready = [json.loads(p.read_text()).get("ready_s") for p in sorted(folder.glob(f"offline-*-{shape}-*.json"))]
    ready = [r for r in ready if r] or [None]
    serve = json.loads(serve_files[-1].read_text())
    offline = [json.loads(p.read_text()) for p in offline_files]
    runs = sorted((r for r in serve["runs"] if r["completed"]), key=lambda r: r["rate"])
    output_tokens = sum(r["output_tokens"] for r in runs) / sum(r["completed"] for r in runs)
    input_tokens = sum(r["prompt_tokens"] for r in runs) / sum(r["completed"] for r in runs)
    capacity = statistics.median(o["output_tokens_per_s"] for o in offline) / output_tokens
    runs = [r for r in runs if r["rate"] <= capacity]
    ms = lambda r, key, q: r[key][q] / 1000.0   # noqa: E731
    return ReplicaModel(
        shape=shape, rates=tuple(float(r["rate"]) for r in runs),
        ttft_p50_s=tuple(ms(r, "ttft_ms", "p50") for r in runs), ttft_p90_s=tuple(ms(r, "ttft_ms", "p90") for r in runs),
        ttft_p99_s=tuple(ms(r, "ttft_ms", "p99") for r in runs), e2e_s=tuple(ms(r, "e2e_latency_ms", "mean") for r in runs),
        capacity_rps=capacity, input_tokens=input_tokens, output_tokens=output_tokens,
        kv_tokens=min(o["num_kv_blocks"] * o["block_size"] for o in offline),
        startup_s=(min(ready), max(ready)),
        sources=tuple(p.name for p in (serve_files[-1], *offline_files)))


def _plain(path: Path) -> bool:
    """An offline record of the default engine settings (no quantization, bf16 KV cache)."""
    record = json.loads(path.read_text())
    return not record.get("quantization") and record.get("kv_cache_dtype", "auto") == "auto"
