"""Streams and whole answers, both ways: a streamed answer gathered into the chat.completion (or
text_completion) JSON the cache stores, and a stored answer replayed as a stream to a client that asked for one."""
from __future__ import annotations

import json

from llmfleet.apps.cache.keys import CHAT_PATH


def gathered(events: bytes, path: str) -> bytes | None:
    """The whole answer of a finished stream; None when the stream has an error event or did not finish."""
    choices: dict[int, dict] = {}
    first, usage, done = None, None, False
    for line in events.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            done = True
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            return None
        first = first or chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            _merge(choices.setdefault(choice["index"], {"index": choice["index"], "text": "",
                                                        "finish_reason": None}), choice, path)
    if not done or first is None or any(c["finish_reason"] is None for c in choices.values()):
        return None
    return json.dumps(_answer(first, choices, usage, path)).encode()


def _merge(into: dict, choice: dict, path: str) -> None:
    piece = (choice.get("delta") or {}).get("content") if path == CHAT_PATH else choice.get("text")
    into["text"] += piece or ""
    into["finish_reason"] = choice.get("finish_reason") or into["finish_reason"]


def _answer(first: dict, choices: dict[int, dict], usage: dict | None, path: str) -> dict:
    chat = path == CHAT_PATH
    out = []
    for index in sorted(choices):
        choice = choices[index]
        body = ({"message": {"role": "assistant", "content": choice["text"]}} if chat else {"text": choice["text"]})
        out.append({"index": index, **body, "logprobs": None, "finish_reason": choice["finish_reason"]})
    answer = {"id": first.get("id"), "object": "chat.completion" if chat else "text_completion",
              "created": first.get("created"), "model": first.get("model"), "choices": out}
    return answer | ({"usage": usage} if usage else {})


def replayed(body: bytes, path: str) -> bytes:
    """A stored answer as SSE events: per choice one content event and one finish event, then [DONE]."""
    answer = json.loads(body)
    chat = path == CHAT_PATH
    head = {"id": answer.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": answer.get("created"), "model": answer.get("model")}
    events = []
    for choice in answer.get("choices", []):
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        piece = {"delta": {"role": "assistant", "content": text or ""}} if chat else {"text": text or ""}
        events.append({**head, "choices": [{"index": choice["index"], **piece, "finish_reason": None}]})
        end = {"delta": {}} if chat else {"text": ""}
        events.append({**head, "choices": [{"index": choice["index"], **end,
                                            "finish_reason": choice.get("finish_reason")}]})
    if answer.get("usage"):
        events.append({**head, "choices": [], "usage": answer["usage"]})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
