"""Admission against rpm, tpm, parallel requests and budgets, for every subject of a key (itself, its team).

A request is admitted only if every subject has room for all of: one more request this minute, its estimated
tokens this minute, one more in flight, and its maximum cost on top of the spend and the reservations of the
budget period. Admission takes all of it at once (in process: no await between check and take; with Redis: one
Lua script); `settle` puts back the parallel slot and the reservation and books the real tokens and cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmfleet.tenancy.records import Subject

WINDOW_S = 60.0
EPSILON = 1e-9  # float reservations are compared with this slack


@dataclass(frozen=True, slots=True)
class Ask:
    tokens: int    # estimated at admission: prompt characters / 4 + the completion tokens asked (times n)
    cost: float    # the most the request can cost: the estimated prompt and every asked token at the price


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """The key's own rpm/tpm after admission, for OpenAI's x-ratelimit-* headers."""
    rpm_limit: int | None = None
    rpm_remaining: int = 0
    tpm_limit: int | None = None
    tpm_remaining: int = 0
    reset_s: float = WINDOW_S


@dataclass(slots=True)
class Ticket:
    subjects: tuple[Subject, ...]
    ask: Ask
    minute: int
    periods: tuple[int, ...]
    status: LimitStatus = field(default_factory=LimitStatus)


class Rejected(Exception):
    def __init__(self, reason: str, subject: Subject, retry_after: float | None, status: LimitStatus):
        super().__init__(f"{subject.name}: {reason}")
        self.reason, self.subject, self.retry_after, self.status = reason, subject, retry_after, status


def reset_in(now: float) -> float:
    return WINDOW_S - now % WINDOW_S


def status_of(first: Subject, requests: int, tokens: int, now: float) -> LimitStatus:
    return LimitStatus(first.rpm_limit, (first.rpm_limit or 0) - requests,
                       first.tpm_limit, (first.tpm_limit or 0) - tokens, reset_in(now))


def retry_after(reason: str, subject: Subject, now: float) -> float | None:
    if reason in ("rpm", "tpm"):
        return reset_in(now)
    if reason == "parallel":
        return 1.0
    end = subject.period_end(now)
    return None if math.isinf(end) else end - now


@dataclass(slots=True)
class _Window:
    minute: int = -1
    requests: int = 0
    tokens: int = 0


class LocalLimiter:
    """One process's counters. Every method runs without awaiting, so admission is atomic on the event loop."""

    def __init__(self):
        self._windows: dict[str, _Window] = {}
        self._parallel: dict[str, int] = {}
        self._budgets: dict[str, tuple[int, list[float]]] = {}  # name -> (period, [spent, reserved])

    async def admit(self, subjects: tuple[Subject, ...], ask: Ask, now: float) -> Ticket:
        minute = int(now // WINDOW_S)
        periods = tuple(s.period(now) for s in subjects)
        first = self._window(subjects[0].name, minute)
        for s, period in zip(subjects, periods):
            reason = self._refusal(s, ask, minute, period)
            if reason is not None:
                status = status_of(subjects[0], first.requests, first.tokens, now)
                raise Rejected(reason, s, retry_after(reason, s, now), status)
        for s, period in zip(subjects, periods):
            self._take(s, ask, minute, period)
        return Ticket(subjects, ask, minute, periods, status_of(subjects[0], first.requests, first.tokens, now))

    async def settle(self, ticket: Ticket, tokens: int, cost: float) -> None:
        for s, period in zip(ticket.subjects, ticket.periods):
            window = self._windows.get(s.name)
            if window is not None and window.minute == ticket.minute:
                window.tokens += tokens - ticket.ask.tokens
            if s.max_parallel_requests is not None:
                self._parallel[s.name] = max(0, self._parallel.get(s.name, 0) - 1)
            budget = self._budget(s, period)
            budget[0] += cost
            budget[1] = max(0.0, budget[1] - ticket.ask.cost)

    def _refusal(self, s: Subject, ask: Ask, minute: int, period: int) -> str | None:
        window = self._window(s.name, minute)
        if s.rpm_limit is not None and window.requests + 1 > s.rpm_limit:
            return "rpm"
        if s.tpm_limit is not None and window.tokens + ask.tokens > s.tpm_limit:
            return "tpm"
        if s.max_parallel_requests is not None and self._parallel.get(s.name, 0) + 1 > s.max_parallel_requests:
            return "parallel"
        if s.max_budget is not None:
            spent, reserved = self._budget(s, period)
            if spent + reserved + ask.cost > s.max_budget + EPSILON:
                return "budget"
        return None

    def _take(self, s: Subject, ask: Ask, minute: int, period: int) -> None:
        window = self._window(s.name, minute)
        window.requests += 1
        window.tokens += ask.tokens
        if s.max_parallel_requests is not None:
            self._parallel[s.name] = self._parallel.get(s.name, 0) + 1
        self._budget(s, period)[1] += ask.cost

    def _window(self, name: str, minute: int) -> _Window:
        window = self._windows.get(name)
        if window is None or window.minute != minute:
            window = self._windows[name] = _Window(minute)
        return window

    def _budget(self, s: Subject, period: int) -> list[float]:
        held = self._budgets.get(s.name)
        if held is None or held[0] != period:
            held = self._budgets[s.name] = (period, [s.spent_in(period), 0.0])
        return held[1]

    async def close(self) -> None:
        pass
