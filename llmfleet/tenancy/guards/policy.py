"""What a guard does with the PII it finds in prompts (before the call) and answers (after it): `log` names the
kinds found (never the values), `mask` replaces them by "[KIND]", `block` refuses the request with a 400 (a prompt)
or replaces the answer's text (an answer). Streamed answers are masked event by event: a value split across two
events is not seen."""
from __future__ import annotations

import json
import logging

from llmfleet.tenancy.errors import TenancyError
from llmfleet.tenancy.guards import pii

logger = logging.getLogger(__name__)
ACTIONS = ("off", "log", "mask", "block")
BLOCKED_ANSWER = "[answer withheld: it contained personal data]"


def check_action(action: str, field: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"{field}: one of {', '.join(ACTIONS)} expected, got {action!r}")
    return action


def guard_prompt(data: dict, action: str, who: str) -> dict:
    """The request with its prompt strings guarded (messages' contents and parts, or `prompt`)."""
    found: set[str] = set()

    def fix(text: str) -> str:
        hits = pii.find(text)
        found.update(h.kind for h in hits)
        return pii.mask(text, hits) if hits and action in ("mask", "block") else text

    if "messages" in data and isinstance(data["messages"], list):
        data["messages"] = [_message(m, fix) for m in data["messages"]]
    elif "prompt" in data:
        data["prompt"] = _strings(data["prompt"], fix)
    elif "input" in data:  # /v1/responses: a string or items, and the instructions
        data["input"] = [_item(i, fix) for i in data["input"]] if isinstance(data["input"], list) else \
            _strings(data["input"], fix)
        data["instructions"] = _strings(data.get("instructions"), fix)
    if found:
        logger.warning("PII in a prompt from %s: %s (%s)", who, ", ".join(sorted(found)), action)
        if action == "block":
            raise TenancyError(400, f"the prompt contains personal data ({', '.join(sorted(found))})",
                               "pii_detected", param=_prompt_param(data))
    return data


def guard_answer(body: bytes, action: str, who: str) -> bytes:
    """A JSON completion (or one stream event's JSON) with its answer texts guarded."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    found: set[str] = set()

    def fix(text: str) -> str:
        hits = pii.find(text)
        found.update(h.kind for h in hits)
        if not hits or action == "log":
            return text
        return BLOCKED_ANSWER if action == "block" else pii.mask(text, hits)

    for choice in data.get("choices") or []:
        for holder in (choice, choice.get("message"), choice.get("delta")):
            for name in ("text", "content"):
                if isinstance(holder, dict) and isinstance(holder.get(name), str):
                    holder[name] = fix(holder[name])
    _guard_response_texts(data, fix)
    if not found:
        return body
    logger.warning("PII in an answer to %s: %s (%s)", who, ", ".join(sorted(found)), action)
    return body if action == "log" else json.dumps(data).encode()


def _guard_response_texts(data: dict, fix) -> None:
    """/v1/responses answers: output_text parts of a response (or of a stream event's), and text deltas."""
    if data.get("type") == "response.output_text.delta" and isinstance(data.get("delta"), str):
        data["delta"] = fix(data["delta"])
    for response in (data, data.get("response")):
        for item in (response.get("output") if isinstance(response, dict) else None) or []:
            for part in (item.get("content") if isinstance(item, dict) else None) or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = fix(part["text"])


def _prompt_param(data: dict) -> str:
    return next((name for name in ("messages", "prompt", "input") if name in data), "prompt")


def _item(item, fix):
    """A /v1/responses input item: a message's content, or a function call's output."""
    if isinstance(item, dict) and isinstance(item.get("output"), str):
        return {**item, "output": fix(item["output"])}
    return _message(item, fix)


def _message(message, fix):
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": fix(content)}
    if isinstance(content, list):
        parts = [{**p, "text": fix(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                 for p in content]
        return {**message, "content": parts}
    return message


def _strings(value, fix):
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [fix(v) if isinstance(v, str) else v for v in value]
    return value
