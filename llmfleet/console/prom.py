"""Prometheus exposition text, parsed into samples, and what the console reads from them: sums of counters and
gauges over label matches, and histogram buckets merged across series and replicas.

The parser reads the text format's sample lines with two regular expressions (about 3x faster than
prometheus_client's character-by-character parser, which matters when a gateway scrapes many replicas every
interval); comments, TYPE/HELP lines and `_created` samples are skipped.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


class Metrics:
    """One scrape: sample name -> [(labels, value)]. Counters keep their `_total` suffix, histograms their
    `_bucket` / `_count` / `_sum` samples."""

    __slots__ = ("samples",)

    def __init__(self, samples: dict[str, list[tuple[dict, float]]]):
        self.samples = samples

    @classmethod
    def parse(cls, text: str | bytes) -> "Metrics":
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            found = _SAMPLE.fullmatch(line)
            if found is None:
                raise ValueError(f"not a Prometheus sample line: {line[:200]!r}")
            name, labels, value = found.groups()
            if not name.endswith("_created"):
                samples[name].append((_labels(labels) if labels else {}, _number(value, line)))
        return cls(dict(samples))

    def total(self, name: str, **match: str) -> float | None:
        """The sum of `name` over the series whose labels include `match`; None when there is none."""
        found = [value for labels, value in self.samples.get(name, ()) if _matches(labels, match)]
        return sum(found) if found else None

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """The sum of `name` per value of `label` (series without it are left out)."""
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, ()):
            if label in labels and _matches(labels, match):
                sums[labels[label]] += value
        return dict(sums)

    def buckets(self, name: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts by upper bound (+Inf included), summed over its series."""
        sums: dict[float, float] = defaultdict(float)
        for labels, value in self.samples.get(f"{name}_bucket", ()):
            sums[float(labels["le"])] += value
        return dict(sums)


def _number(text: str, line: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a Prometheus sample line: {line[:200]!r}") from None


def _labels(text: str) -> dict[str, str]:
    return {name: _ESCAPE.sub(_unescape, value) if "\\" in value else value for name, value in _LABEL.findall(text)}


def _unescape(found: re.Match) -> str:
    return "\n" if found.group(1) == "n" else found.group(1)


def _matches(labels: dict, match: dict) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def merged_buckets(scrapes: list[Metrics | None], name: str) -> dict[float, float]:
    """Bucket counts of `name` summed over several scrapes (replicas of one model share bucket bounds)."""
    sums: dict[float, float] = defaultdict(float)
    for metrics in scrapes:
        if metrics is not None:
            for bound, count in metrics.buckets(name).items():
                sums[bound] += count
    return dict(sums)


def bucket_delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    """Observations between two scrapes, per bucket; a counter that went down (a restart) counts from zero."""
    delta = {}
    for bound, count in now.items():
        previous = before.get(bound, 0.0)
        delta[bound] = count - previous if count >= previous else count
    return delta


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding rank q; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower     # above the largest finite bound: the bound is all that is known
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def share_below(limit: float, buckets: dict[float, float]) -> float | None:
    """The fraction of observations at or below `limit` (interpolated within its bucket); None without any."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if limit <= bound:
            if math.isinf(bound):
                return below / total
            return (below + (count - below) * (limit - lower) / (bound - lower)) / total
        lower, below = bound, count
    return 1.0
