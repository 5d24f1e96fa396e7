"""Load traces: the arrival rate (requests per second) at each simulator step, peak-normalized then scaled.

- `diurnal`: a day's cycle, trough at 04:00 (15% of peak), peak at 16:00, with slow seeded noise (+-5%).
- `bursty`: a low diurnal base (15-35% of peak) and seeded bursts (about one an hour, each rising to 2-4x the
  base over one to five minutes, holding five to twenty minutes and decaying over a few more): the shape that
  makes static peak provisioning expensive.
- a file: CSV with a header naming `time_s` and `rate` columns (more columns are ignored), or JSON
  `{"time_s": [...], "rate": [...]}`; linearly interpolated onto the steps, held flat past its ends, and
  taken as absolute requests per second (it is not rescaled unless a peak is given).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

BUILTIN = ("diurnal", "bursty")


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, every_s: float, amplitude: float) -> np.ndarray:
    knots = np.arange(0.0, times[-1] + 2 * every_s, every_s)
    return 1.0 + np.interp(times, knots, rng.uniform(-amplitude, amplitude, knots.size))


def diurnal(times: np.ndarray, rng: np.random.Generator, trough: float = 0.15) -> np.ndarray:
    """A day's cycle, peak-normalized (max 1)."""
    phase = 2 * np.pi * ((times / 3600.0 - 4.0) % 24.0) / 24.0   # 0 at 04:00, pi at 16:00
    cycle = trough + (1 - trough) * (0.5 - 0.5 * np.cos(phase))
    rate = cycle * _smooth_noise(rng, times, 300.0, 0.05)
    return rate / rate.max()


def bursty(times: np.ndarray, rng: np.random.Generator, bursts_per_hour: float = 1.0) -> np.ndarray:
    """A low base with bursts on top, peak-normalized (max 1)."""
    base = 0.15 + 0.20 * (0.5 - 0.5 * np.cos(2 * np.pi * ((times / 3600.0 - 4.0) % 24.0) / 24.0))
    rate = base * _smooth_noise(rng, times, 120.0, 0.05)
    start, span = 0.0, times[-1]
    while True:
        start += rng.exponential(3600.0 / bursts_per_hour)
        if start >= span:
            break
        height = rng.uniform(1.0, 3.0)              # on top of the base: 2-4x in all
        rise, hold, decay = rng.uniform(60, 300), rng.uniform(300, 1200), rng.uniform(120, 600)
        t = times - start
        shape = np.clip(t / rise, 0, 1) * np.where(t < rise + hold, 1.0, np.exp(-(t - rise - hold) / decay))
        rate = rate + base * height * np.where(t >= 0, shape, 0.0)
    return rate / rate.max()


def from_file(path: str | Path, times: np.ndarray) -> np.ndarray:
    """Absolute rates from a CSV or JSON trace, interpolated onto `times`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"trace: {path} is neither a file nor one of {', '.join(BUILTIN)}")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        xs, ys = data.get("time_s"), data.get("rate")
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"time_s", "rate"} <= set(rows[0]):
            raise ValueError(f"trace: {path} needs columns time_s and rate, has {sorted(rows[0])}")
        xs, ys = [float(r["time_s"]) for r in rows], [float(r["rate"]) for r in rows]
    xs, ys = np.asarray(xs or [], dtype=float), np.asarray(ys or [], dtype=float)
    if xs.size < 1 or xs.size != ys.size:
        raise ValueError(f"trace: {path} needs as many time_s as rate values, at least one")
    if np.any(np.diff(xs) <= 0) or np.any(ys < 0) or not np.all(np.isfinite(ys)):
        raise ValueError(f"trace: {path} needs increasing time_s and finite rates >= 0")
    return np.interp(times, xs, ys)


def load_trace(name: str, times: np.ndarray, seed: int, peak_rps: float | None) -> np.ndarray:
    """The rate at each of `times`: a built-in trace scaled to `peak_rps`, or a file (rescaled if peak given)."""
    rng = np.random.default_rng(seed)
    if name in BUILTIN:
        if peak_rps is None:
            raise ValueError("peak_rps: a built-in trace needs a peak rate")
        return (diurnal if name == "diurnal" else bursty)(times, rng) * peak_rps
    rate = from_file(name, times)
    if peak_rps is not None and rate.max() > 0:
        rate = rate * (peak_rps / rate.max())
    return rate
