"""External content filters: an HTTP endpoint or a Python callable consulted with each metered request (and, when
asked, each JSON answer), which may allow it, block it, or redact it (send back a replacement).

The filter receives {"stage": "request" | "response", "key_id", "team_id", "model", "request": {...},
"response": {...} (response stage)} and answers {"action": "allow" | "block" | "redact", "reason": "...",
"request": {...} | "response": {...} (the replacement, for redact)}. An HTTP filter gets it as a POST body; a
callable ("package.module:function", sync or async) as its argument. A filter that fails or exceeds its timeout
lets the request through when the filter fails open (the default), or refuses it with 503 when it fails closed.
Streamed answers are not sent to the response stage (they leave event by event).
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from dataclasses import dataclass

from llmfleet.tenancy.errors import TenancyError

logger = logging.getLogger(__name__)
VERDICTS = ("allow", "block", "redact")


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str                    # allow, block or redact
    reason: str | None = None
    replacement: dict | None = None  # the redacted request or response


def load_callable(path: str):
    """"package.module:function" -> the function; ValueError naming the field otherwise."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"filter_callable: 'module:function' expected, got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"filter_callable: cannot load {path!r}: {exc}") from None


class ContentFilter:
    def __init__(self, url: str | None, callable_path: str | None, timeout_s: float, fail_open: bool):
        self._url, self._timeout, self._fail_open = url, timeout_s, fail_open
        self._function = load_callable(callable_path) if callable_path else None
        self._client = None

    async def start(self) -> None:
        if self._url is not None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self._timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def check(self, payload: dict) -> Verdict:
        """The filter's verdict; on failure allow (fail open) or TenancyError 503 (fail closed)."""
        try:
            answer = await asyncio.wait_for(self._ask(payload), self._timeout)
            return _verdict(answer, payload["stage"])
        except Exception as exc:  # timeout, connection, a bad answer: the configured failure mode decides
            logger.warning("content filter failed (%s): %s", "allowing" if self._fail_open else "refusing", exc)
            if self._fail_open:
                return Verdict("allow", "filter unavailable")
            raise TenancyError(503, "the content filter is unavailable; retry shortly", "filter_unavailable",
                               headers=[(b"retry-after", b"1")]) from None

    async def _ask(self, payload: dict):
        if self._function is not None:
            answer = self._function(payload)
            return await answer if inspect.isawaitable(answer) else answer
        response = await self._client.post(self._url, json=payload)
        response.raise_for_status()
        return response.json()


def _verdict(answer, stage: str) -> Verdict:
    if not isinstance(answer, dict) or answer.get("action") not in VERDICTS:
        raise ValueError(f"the filter answered {str(answer)[:100]!r}: action allow, block or redact expected")
    replacement = answer.get(stage)
    if answer["action"] == "redact" and not isinstance(replacement, dict):
        raise ValueError(f"a redact verdict needs the replacement {stage!r} object")
    reason = answer.get("reason") if isinstance(answer.get("reason"), str) else None
    return Verdict(answer["action"], reason, replacement if answer["action"] == "redact" else None)


def blocked(reason: str | None) -> TenancyError:
    return TenancyError(400, f"blocked by the content filter{': ' + reason if reason else ''}", "content_filtered")


async def filter_request(content_filter: ContentFilter, body: bytes, context: dict) -> bytes:
    """The request body as the filter lets it through (redacted or not); TenancyError 400 when it blocks."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body  # the metering step answers malformed bodies
    model = request.get("model") if isinstance(request, dict) else None
    verdict = await content_filter.check({"stage": "request", **context, "model": model, "request": request})
    if verdict.action == "block":
        raise blocked(verdict.reason)
    return json.dumps(verdict.replacement).encode() if verdict.action == "redact" else body


def answer_check(content_filter: ContentFilter, body: bytes, context: dict):
    """For ResponseMeter: an async (status, answer) -> (status, answer) of a JSON answer through the filter."""
    request = json.loads(body)

    async def check(status: int, answer: bytes) -> tuple[int, bytes]:
        try:
            response = json.loads(answer)
        except ValueError:
            return status, answer
        verdict = await content_filter.check({"stage": "response", **context, "request": request,
                                              "response": response})
        if verdict.action == "block":
            return 400, blocked(verdict.reason).body()
        return status, json.dumps(verdict.replacement).encode() if verdict.action == "redact" else answer

    return check
