"""What a completion request asks (estimated at admission) and what it used (read from the response).

The request side reads the JSON body once: model, the prompt's characters (/4 for tokens), max_tokens times n
(times the prompts), and for streams forces `stream_options.include_usage`, so the final usage chunk always comes.
The response side wraps ASGI `send`: a JSON answer is held until complete, its `usage` read and the cost header
added; a stream passes through event by event, its usage chunk read and removed for clients that did not ask.
"""
from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import Message, Send

from llmfleet.tenancy.errors import TenancyError

METERED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/responses"})
COST_FIELD = "cost"  # the dollars of a streamed request, added to its usage chunk (for clients that asked for it)


@dataclass(frozen=True, slots=True)
class Inspection:
    model: str | None
    stream: bool
    strip_usage: bool          # the client did not ask for the usage chunk: remove it from the stream
    prompt_tokens: int         # estimated
    completion_tokens: int     # the most it may generate: max_tokens x n x prompts
    body: bytes                # what goes upstream


def inspect_request(body: bytes, default_max_tokens: int) -> Inspection:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise TenancyError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(data, dict):
        raise TenancyError(400, "the request body must be a JSON object", "invalid_value")
    prompts, chars, ids = _prompt_size(data)
    n = data.get("n") if isinstance(data.get("n"), int) and data.get("n") > 0 else 1
    asked = data.get("max_completion_tokens") or data.get("max_tokens") or data.get("max_output_tokens")
    max_tokens = asked if isinstance(asked, int) and asked > 0 else default_max_tokens
    stream = data.get("stream") is True
    strip = False
    if stream and not _is_responses(data):  # a Responses stream always ends with its usage
        options = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
        strip = options.get("include_usage") is not True
        data["stream_options"] = {**options, "include_usage": True}
        body = json.dumps(data).encode()
    model = data.get("model") if isinstance(data.get("model"), str) else None
    return Inspection(model, stream, strip, math.ceil(chars / 4) + ids, max_tokens * n * prompts, body)


def _is_responses(data: dict) -> bool:
    return "input" in data and "messages" not in data and "prompt" not in data


def _prompt_size(data: dict) -> tuple[int, int, int]:
    """(prompts, characters, token ids) of a completions `prompt`, a chat's `messages` or a response's `input`
    (a follow-up's stored history is not counted here: the answer's usage settles the cost)."""
    if "messages" in data:
        return 1, _chars(data["messages"]), 0
    if _is_responses(data):
        return 1, _chars([data["input"], data.get("instructions")]), 0
    prompt = data.get("prompt", "")
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return 1, 0, len(prompt)
    if isinstance(prompt, list):
        ids = sum(len(p) for p in prompt if isinstance(p, list))
        return max(1, len(prompt)), _chars([p for p in prompt if isinstance(p, str)]), ids
    return 1, _chars(prompt), 0


def _chars(value) -> int:
    """Characters of every string in a (nested) JSON value: message contents, parts, names."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    return 0


class ResponseMeter:
    """Wraps `send`: records the status and usage; `finish_headers(usage)` gives the headers a JSON answer gets."""

    def __init__(self, send: Send, stream: bool, strip_usage: bool,
                 start_headers: list, finish_headers: Callable[[tuple[int, int] | None], list],
                 answer_filter: Callable[[bytes], bytes] | None = None,
                 cost_of: Callable[[tuple[int, int]], float] | None = None,
                 answer_check: Callable[[int, bytes], Awaitable[tuple[int, bytes]]] | None = None):
        self._send, self._stream, self._strip, self._filter = send, stream, strip_usage, answer_filter
        self._cost_of, self._check = cost_of, answer_check
        self.stream_text: dict[int, list[str]] | None = None  # set to {} to keep a stream's text (request log)
        self._start_headers, self._finish_headers = start_headers, finish_headers
        self.status = 0
        self.usage: tuple[int, int] | None = None  # (prompt_tokens, completion_tokens)
        self.events = 0
        self.answer = b""                      # a JSON answer as sent (for the request log)
        self._start: Message | None = None
        self._body = bytearray()
        self._pending = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self._start = {**message, "headers": list(message.get("headers", [])) + self._start_headers}
            self._stream = self._stream and _is_event_stream(message)
            if self._stream:
                await self._send(self._start)
            return
        if message["type"] != "http.response.body":
            return await self._send(message)
        if self._stream:
            return await self._send_events(message)
        self._body += message.get("body", b"")
        if not message.get("more_body", False):
            await self._send_whole()

    async def _send_whole(self) -> None:
        body = bytes(self._body)
        self.usage = _usage_of(body) if self.status < 400 else None
        if self._filter is not None and self.status < 400:
            body = self._filter(body)
        start = self._start
        if self._check is not None and self.status < 400:  # the external filter's verdict on the answer
            start["status"], body = await self._check(self.status, body)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        start["headers"] = headers + [(b"content-length", str(len(body)).encode())] + self._finish_headers(self.usage)
        self.answer = body
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body})

    async def _send_events(self, message: Message) -> None:
        data = self._pending + message.get("body", b"")
        *events, self._pending = data.split(b"\n\n")
        kept = [out for out in (self._event(e) for e in events) if out is not None]
        more = message.get("more_body", False)
        body = b"".join(e + b"\n\n" for e in kept) + (b"" if more else self._pending)
        if body or not more:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    def _event(self, event: bytes) -> bytes | None:
        """The event to pass on (None: drop it), reading usage from the usage chunk."""
        if event.startswith(b"event: "):
            return self._typed_event(event)
        if self._filter is not None and event.startswith(b"data: {"):
            event = b"data: " + self._filter(event[6:])
        if self.stream_text is not None and event.startswith(b"data: {"):
            _keep_text(event[6:], self.stream_text)
        if not event.startswith(b"data: {") or b'"usage"' not in event:
            self.events += 1
            return event
        chunk = json.loads(event[6:])
        usage = chunk.get("usage")
        if usage:
            self.usage = _tokens(usage)
        if not self._strip:
            if not usage or self._cost_of is None:
                return event
            usage[COST_FIELD] = round(self._cost_of(self.usage), 8)  # the stream's cost: its headers left long ago
            return b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
        if not chunk.get("choices"):
            return None  # the usage chunk itself
        chunk.pop("usage", None)
        self.events += 1
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode()


    def _typed_event(self, event: bytes) -> bytes:
        """A /v1/responses event: its text kept and guarded; the final response's usage read (and its cost added)."""
        head, sep, data = event.partition(b"\ndata: ")
        if not sep:
            return event
        if self._filter is not None:
            data = self._filter(data)
        try:
            chunk = json.loads(data)
        except ValueError:
            return head + sep + data
        if self.stream_text is not None and chunk.get("type") == "response.output_text.delta":
            self.stream_text.setdefault(0, []).append(str(chunk.get("delta", "")))
        usage = (chunk.get("response") or {}).get("usage") if isinstance(chunk.get("response"), dict) else None
        self.events += 1
        if not usage:
            return head + sep + data
        self.usage = _tokens(usage)
        if self._cost_of is not None:
            usage[COST_FIELD] = round(self._cost_of(self.usage), 8)
        return head + sep + json.dumps(chunk, separators=(",", ":")).encode()


def _tokens(usage: dict) -> tuple[int, int]:
    """(prompt, completion) tokens of a usage object: chat's and completions' names, or the Responses API's."""
    return (int(usage.get("prompt_tokens", usage.get("input_tokens", 0))),
            int(usage.get("completion_tokens", usage.get("output_tokens", 0))))


def _keep_text(data: bytes, texts: dict[int, list[str]]) -> None:
    """Appends a chunk's text (chat delta content or completion text) to its choice's list."""
    try:
        choices = json.loads(data).get("choices") or []
    except (ValueError, AttributeError):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        text = delta.get("content") if "delta" in choice else choice.get("text")
        if isinstance(text, str):
            texts.setdefault(int(choice.get("index", 0)), []).append(text)


def _is_event_stream(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in start["headers"])


def _usage_of(body: bytes) -> tuple[int, int] | None:
    try:
        return _tokens(json.loads(body).get("usage") or {})
    except (ValueError, AttributeError, TypeError):
        return None
