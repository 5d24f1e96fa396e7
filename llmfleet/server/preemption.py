"""Spot / preemptible instances: poll the cloud's metadata endpoint for a preemption notice, then drain.

What counts as a notice (one rule covers the providers):
- AWS `.../latest/meta-data/spot/instance-action`: 404 while nothing is planned, 200 with a JSON action
  (`{"action": "terminate", "time": ...}`) once the two-minute warning is out. With IMDSv2 required the GET
  answers 401; the poller then fetches a session token (`PUT /latest/api/token`) and retries with it.
- GCE `.../computeMetadata/v1/instance/preempted` (sent with `Metadata-Flavor: Google`): 200 "FALSE", then
  200 "TRUE" at the 30-second warning.
So: a 200 whose body is not "FALSE" is a notice; 404, "FALSE" and unreachable endpoints are not (logged at debug:
the endpoint is missing off the cloud). On a notice the replica drains as on SIGTERM: /ready says "draining" so
the gateway stops routing to it, new requests get 503 "draining" (which the gateway retries elsewhere), and the
in-flight ones get the drain timeout; when the notice names the machine's end (AWS's "time"), the drain is cut
to end `EXIT_MARGIN_S` before it, so that the process still exits cleanly.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from urllib.parse import urlsplit

import httpx

from llmfleet.server.lifecycle import Lifecycle

logger = logging.getLogger(__name__)
_HEADERS = {"Metadata-Flavor": "Google"}
_TOKEN_TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "300"}
EXIT_MARGIN_S = 5.0   # between the end of the drain and the machine's end: the engine and uvicorn shut down


def seconds_left(body: str, now: dt.datetime | None = None) -> float | None:
    """Seconds until the termination time a notice names (AWS: {"time": "2026-12-02T17:00:00Z"}), or None."""
    try:
        when = json.loads(body).get("time")
        end = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return (end - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()


def is_notice(status: int, body: str) -> bool:
    """Whether one answer of the metadata endpoint announces a preemption."""
    return status == 200 and body.strip().upper() != "FALSE"


class PreemptionWatcher:
    """Polls `url` every `interval_s` until a notice comes, then asks `lifecycle` to drain (once)."""

    def __init__(self, url: str, lifecycle: Lifecycle, interval_s: float = 5.0, timeout_s: float = 2.0):
        self.url, self.lifecycle = url, lifecycle
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._token: str | None = None

    async def run(self) -> None:
        """Run until the notice (or until cancelled with the app)."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while not self.lifecycle.draining:
                notice = await self._poll(client)
                if notice is not None:
                    self._drain(notice)
                    return
                await asyncio.sleep(self.interval_s)

    def _drain(self, notice: str) -> None:
        left = seconds_left(notice)
        if left is not None:
            self.lifecycle.drain_timeout = max(0.0, min(self.lifecycle.drain_timeout, left - EXIT_MARGIN_S))
        logger.warning("preemption notice from %s (%s): draining for up to %.1f s", self.url, notice[:200],
                       self.lifecycle.drain_timeout)
        self.lifecycle.request_drain()

    async def _poll(self, client: httpx.AsyncClient) -> str | None:
        """The notice's body, or None."""
        try:
            response = await client.get(self.url, headers=self._headers())
            if response.status_code == 401:   # AWS IMDSv2: a session token first
                self._token = await self._fetch_token(client)
                response = await client.get(self.url, headers=self._headers())
        except httpx.HTTPError as exc:
            logger.debug("preemption notice endpoint %s: %s", self.url, exc)
            return None
        return response.text if is_notice(response.status_code, response.text) else None

    def _headers(self) -> dict:
        return {**_HEADERS, "X-aws-ec2-metadata-token": self._token} if self._token else _HEADERS

    async def _fetch_token(self, client: httpx.AsyncClient) -> str | None:
        parts = urlsplit(self.url)
        response = await client.put(f"{parts.scheme}://{parts.netloc}/latest/api/token", headers=_TOKEN_TTL)
        return response.text.strip() if response.status_code == 200 else None
