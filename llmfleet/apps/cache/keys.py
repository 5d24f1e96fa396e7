"""What a request is cached under: whether it may be cached at all, its exact key (the model, the normalized
messages or prompt, and every field that changes the answer), and for semantic matching its namespace (the same,
less the last user turn) and the text that is embedded (that last user turn)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

CHAT_PATH, COMPLETIONS_PATH = "/v1/chat/completions", "/v1/completions"
CACHED_PATHS = (CHAT_PATH, COMPLETIONS_PATH)
CACHE_FIELD = "cache"  # the request's own opt-in (true) or opt-out (false); never sent upstream
# Fields that do not change the answer's content: left out of the keys.
_NEUTRAL = frozenset({"stream", "stream_options", "user", "priority", "metadata", "store", "messages", "prompt",
                      CACHE_FIELD})
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class CacheKeys:
    exact: str                 # hex digest of everything that determines the answer
    namespace: str | None      # hex digest of all but the embedded text (None: exact matching only)
    text: str | None           # the last user turn (or the whole prompt), to embed
    stream: bool


def normalize(text: str) -> str:
    """Whitespace runs become one space, ends are trimmed; case and punctuation are kept (they may matter)."""
    return _SPACES.sub(" ", text).strip()


def cacheable(payload: dict, control: str | None) -> bool:
    """A request is looked up and stored when it asks (`"cache": true`) or, by default, when its temperature is
    0 and it samples one answer; `"cache": false` or a Cache-Control of no-store turns it off."""
    if control is not None and "no-store" in control.lower():
        return False
    wanted = payload.get(CACHE_FIELD)
    if isinstance(wanted, bool):
        return wanted
    return payload.get("temperature") == 0 and payload.get("n", 1) == 1


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def _normalized(message: dict) -> dict:
    kept = {k: v for k, v in message.items() if k != "content"}
    return {**kept, "content": normalize(message_text(message))}


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_keys(path: str, payload: dict) -> CacheKeys | None:
    """The request's keys; None for a request shape the cache does not handle (e.g. token-id prompts)."""
    fields = {k: v for k, v in payload.items() if k not in _NEUTRAL}
    stream = payload.get("stream") is True
    if path == CHAT_PATH:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return None
        normalized = [_normalized(m) for m in messages]
        exact = _digest(path, fields, normalized)
        if normalized[-1].get("role") != "user" or not normalized[-1]["content"]:
            return CacheKeys(exact, None, None, stream)
        # the system prompt and every earlier turn are hashed into the namespace; only the last turn is embedded
        return CacheKeys(exact, _digest(path, fields, normalized[:-1]), normalized[-1]["content"], stream)
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        return None
    text = normalize(prompt)
    return CacheKeys(_digest(path, fields, text), _digest(path, fields), text or None, stream)
