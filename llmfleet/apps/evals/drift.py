"""Drift over the request logs: rolling windows of answers compared with a reference window, per scalar by PSI
(latency, output length, judge score, refusals) and for the prompts' and answers' embeddings by an RBF-kernel MMD
with a permutation p-value. A window alerts when a PSI passes `psi_alert` or an MMD's p-value falls below
`mmd_alpha`; windows with fewer than `min_count` requests are reported but never alert."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np

from llmfleet.apps.evals.stats import median_gamma, mmd_test, psi, psi_binary

REFUSAL = re.compile(r"\b(I can(?:not|'t|’t)|I am (?:unable|not able)|I'm (?:unable|not able|sorry)|I am sorry|"
                     r"As an AI|I (?:won't|will not) (?:help|assist|provide)|I must decline)\b", re.IGNORECASE)
SCALARS = ("latency_s", "output_tokens", "score", "refusal")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    window_s: float = 3600.0          # each window's length
    step_s: float | None = None       # how far windows move (None: window_s, no overlap)
    reference_s: float | None = None  # the reference: the first this many seconds (None: the first window)
    min_count: int = 20
    psi_alert: float = 0.25
    mmd_alpha: float = 0.01
    bins: int = 10
    permutations: int = 200

    def __post_init__(self) -> None:
        for name in ("window_s", "step_s", "reference_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {value!r}")
        if self.min_count < 2:
            raise ValueError(f"min_count: must be at least 2, got {self.min_count!r}")
        if not 0 < self.mmd_alpha < 1 or (self.permutations + 1) * self.mmd_alpha < 1:
            raise ValueError(f"mmd_alpha: must be in (0, 1) and at least 1 / (permutations + 1) (the smallest "
                             f"p-value {self.permutations} permutations can give), got {self.mmd_alpha!r}")


@dataclass(slots=True)
class Observation:
    """One logged request, as drift sees it."""
    t: float
    latency_s: float
    output_tokens: float
    refusal: float                    # 1.0 when the answer refuses
    score: float | None               # the judge's normalized score, where judged
    prompt: str = ""
    answer: str = ""
    request_id: str | None = None


@dataclass(slots=True)
class Window:
    start: float
    end: float
    count: int
    psi: dict = field(default_factory=dict)        # scalar -> PSI against the reference
    means: dict = field(default_factory=dict)      # scalar -> the window's mean
    mmd: dict = field(default_factory=dict)        # "prompt" / "answer" -> (MMD^2, p-value)
    alerts: list = field(default_factory=list)     # what passed its threshold


def _epoch(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    when = dt.datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def observation(row: dict, scores: dict | None = None) -> Observation:
    """From an exported log row (`llmfleet logs export`); `scores`: request_id -> judge score in [0, 1]."""
    started, ended = _epoch(row["started_at"]), _epoch(row.get("ended_at") or row["started_at"])
    answer = row.get("response") or ""
    tokens = row.get("completion_tokens")
    score = (scores or {}).get(row.get("request_id"))
    return Observation(started, max(0.0, ended - started), float(tokens if tokens is not None else len(answer.split())),
                       1.0 if REFUSAL.search(answer) else 0.0, score, row.get("prompt") or "", answer,
                       row.get("request_id"))


def _values(observations: list[Observation], name: str) -> np.ndarray:
    return np.asarray([getattr(o, name) for o in observations if getattr(o, name) is not None], float)


def _window_ranges(first: float, last: float, config: DriftConfig, reference_end: float):
    step = config.step_s or config.window_s
    start = reference_end
    while start <= last:
        yield start, start + config.window_s
        start += step


def analyze(observations: list[Observation], config: DriftConfig, prompt_vectors: np.ndarray | None = None,
            answer_vectors: np.ndarray | None = None) -> tuple[Window, list[Window]]:
    """(the reference window, every later window compared with it). Vectors align with `observations`."""
    if not observations:
        raise ValueError("input: no requests to analyze")
    order = sorted(range(len(observations)), key=lambda i: observations[i].t)
    obs = [observations[i] for i in order]
    vectors = {k: v[order] for k, v in (("prompt", prompt_vectors), ("answer", answer_vectors)) if v is not None}
    times = np.asarray([o.t for o in obs])
    first = times[0]
    reference_end = first + (config.reference_s or config.window_s)
    ref_mask = times < reference_end
    reference = _summary(obs, ref_mask, first, reference_end)
    gammas = {k: median_gamma(v[ref_mask]) for k, v in vectors.items() if ref_mask.sum() >= 2}
    windows = []
    for start, end in _window_ranges(first, times[-1], config, reference_end):
        mask = (times >= start) & (times < end)
        window = _summary(obs, mask, start, end)
        _compare(window, obs, ref_mask, mask, vectors, gammas, config)
        windows.append(window)
    return reference, windows


def _summary(obs: list[Observation], mask: np.ndarray, start: float, end: float) -> Window:
    chosen = [o for o, keep in zip(obs, mask) if keep]
    means = {}
    for name in SCALARS:
        values = _values(chosen, name)
        if len(values):
            means[name] = float(values.mean())
    return Window(start, end, len(chosen), means=means)


def _compare(window: Window, obs, ref_mask, mask, vectors: dict, gammas: dict, config: DriftConfig) -> None:
    if window.count < 2:
        return
    ref = [o for o, keep in zip(obs, ref_mask) if keep]
    cur = [o for o, keep in zip(obs, mask) if keep]
    for name in SCALARS:
        r, c = _values(ref, name), _values(cur, name)
        if len(r) >= 2 and len(c) >= 2:
            window.psi[name] = psi_binary(r, c) if name == "refusal" else psi(r, c, config.bins)
    for space, matrix in vectors.items():
        if space in gammas:
            window.mmd[space] = mmd_test(matrix[ref_mask], matrix[mask], config.permutations,
                                         gamma=gammas[space])
    if window.count < config.min_count:
        return
    window.alerts = [f"psi:{name}" for name, value in window.psi.items() if value > config.psi_alert]
    window.alerts += [f"mmd:{space}" for space, (_, p) in window.mmd.items() if p < config.mmd_alpha]
