"""What the prompt-injection guard does with a request whose prompt scores at or above the threshold: `log` names
the key and the score, `flag` passes it on with `x-llmfleet-flagged: prompt_injection` on the answer, `block`
refuses it with 400 `prompt_injection_detected` (nothing charged). Scoring runs in a worker thread, so a long
prompt does not hold the event loop."""
from __future__ import annotations

import asyncio
import logging

from llmfleet.tenancy.bodies import json_object_or_none
from llmfleet.tenancy.errors import TenancyError
from llmfleet.tenancy.guards import injection

logger = logging.getLogger(__name__)
INJECTION_ACTIONS = ("off", "log", "flag", "block")
FLAG_HEADER = b"x-llmfleet-flagged"
SCANNED_ROLES = frozenset({"user", "tool", "function"})  # what others can write into; system text is the caller's


def prompt_text(data: dict) -> str:
    """The text a request's user-side messages (or its `prompt`) carry, one part per line."""
    parts: list[str] = []
    messages = data.get("messages")
    items = data.get("input") if messages is None and "prompt" not in data else None  # /v1/responses
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role", "user") in SCANNED_ROLES:
                _collect(message.get("content"), parts)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                _collect(item.get("output"), parts)
            elif isinstance(item, dict) and item.get("role", "user") in SCANNED_ROLES:
                _collect(item.get("content"), parts)
    else:
        _collect(items if items is not None else data.get("prompt"), parts)
    return "\n".join(parts)


def _collect(value, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])


async def check_prompt(body: bytes, action: str, threshold: float, who: str) -> list[tuple[bytes, bytes]]:
    """Headers for the answer ([] or the flag); TenancyError 400 when `action` is block and the prompt scores."""
    data = json_object_or_none(body)  # None: the metering step answers malformed bodies
    text = prompt_text(data) if data is not None else ""
    if not text:
        return []
    score = await asyncio.to_thread(injection.score, text)
    if score < threshold:
        return []
    logger.warning("prompt injection suspected from %s (score %.3f, %s)", who, score, action)
    if action == "block":
        raise TenancyError(400, f"the prompt looks like a prompt injection (score {score:.2f})",
                           "prompt_injection_detected",
                           param=next((n for n in ("messages", "prompt", "input") if n in data), "prompt"))
    return [(FLAG_HEADER, b"prompt_injection")] if action == "flag" else []
