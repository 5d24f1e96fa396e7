"""What the gateway knows about one replica: health, draining, load, its models, and a circuit breaker.

The breaker opens after `threshold` consecutive failures (connect errors, 5xx) and keeps the replica out of rotation
for `open_s`; then one trial request is let through (half-open): success closes the circuit, failure re-opens it
for twice as long (up to 30 s). A replica whose health check passes again after failing also gets its trial at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_CODE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
MAX_OPEN_S = 30.0


@dataclass(slots=True)
class CircuitBreaker:
    threshold: int = 3
    open_s: float = 2.0
    state: str = CLOSED
    failures: int = 0
    _open_for: float = 0.0
    _open_until: float = 0.0
    _trial_in_flight: bool = False

    def allows(self, now: float | None = None) -> bool:
        """Whether a new request may go to the replica (a half-open circuit takes one trial at a time)."""
        if self.state == OPEN and (now or time.monotonic()) >= self._open_until:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN:
            return not self._trial_in_flight
        return self.state == CLOSED

    def on_send(self) -> None:
        if self.state == HALF_OPEN:
            self._trial_in_flight = True

    def success(self) -> None:
        self.state, self.failures, self._open_for, self._trial_in_flight = CLOSED, 0, 0.0, False

    def failure(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self._open_for = min(MAX_OPEN_S, self._open_for * 2 if self._open_for else self.open_s)
            self.state, self._open_until = OPEN, time.monotonic() + self._open_for

    def probe_passed(self) -> None:
        """The replica came back after failing its health checks: let a trial request decide."""
        if self.state == OPEN:
            self.state = HALF_OPEN


@dataclass(slots=True, eq=False)
class Replica:
    url: str
    breaker: CircuitBreaker
    kv_events: str | None = None        # the PUB endpoint (from config or the replica's /kv_events)
    models: tuple[str, ...] = ()        # from its /v1/models; () until the first successful check
    cards: list = field(default_factory=list)
    instance: str | None = None         # its serving process's id (from /v1/models): stored responses name it
    healthy: bool = False               # its /ready answered 200 or "draining" lately
    draining: bool = False              # /ready said draining: finishes what it has, gets nothing new
    operator_drained: bool = False      # an operator drained it at the gateway (console): same, until undrained
    in_flight: int = 0                  # requests the gateway has open on it
    routed: int = 0                     # requests the gateway sent it, ever
    failures: int = 0
    source: str | None = None           # k8s://SERVICE[.NAMESPACE] when discovered; None when configured

    def available(self, now: float | None = None) -> bool:
        return self.healthy and not self.draining and not self.operator_drained and self.breaker.allows(now)

    def serves(self, model: str | None) -> bool:
        return model is None or not self.models or model in self.models

    def snapshot(self) -> dict:
        return {"url": self.url, "model": self.models[0] if self.models else None, "models": list(self.models),
                "healthy": self.healthy, "draining": self.draining or self.operator_drained,
                "drained_by": "operator" if self.operator_drained else "replica" if self.draining else None,
                "in_flight": self.in_flight, "routed": self.routed, "circuit": self.breaker.state,
                "kv_events": self.kv_events, "source": self.source}
