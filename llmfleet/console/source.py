"""What a host gives the console: scrapes of what it serves, its replica table, and drain actions."""
from __future__ import annotations

from typing import Protocol

from llmfleet.console.sample import Scrape


class ConsoleError(Exception):
    """An answer in OpenAI's error envelope: status, message, code (and the headers it needs)."""

    def __init__(self, status: int, message: str, code: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class ConsoleSource(Protocol):
    kind: str                            # "gateway" (a fleet) or "replica" (one `llmfleet serve`)
    can_drain: bool                      # whether drain / undrain actions are offered

    def start(self, state: dict) -> None:
        """Called once the host's lifespan has started; `state` is its lifespan state."""

    async def scrape(self) -> Scrape:
        """Metrics as of now: never raises for a replica that does not answer (its entry is None)."""

    def replicas(self) -> list[dict]:
        """The replica table: url, model, healthy, draining, version, circuit, load, ..."""

    async def drain(self, url: str, draining: bool) -> dict:
        """Start or stop draining replica `url`; its new table row. ConsoleError for an unknown one."""
