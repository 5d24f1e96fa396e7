"""The answer objects of /v1/responses as plain dicts, in the shapes the official client parses: output items
(an assistant message with one output_text part, function calls), usage, and the response object itself."""
from __future__ import annotations

import time
import uuid

from llmfleet.protocol.openai.responses import ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message_item(text: str, logprobs: list[dict] | None, status: str = "completed",
                 item_id: str | None = None) -> dict:
    part = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return {"type": "message", "id": item_id or new_id("msg"), "status": status, "role": "assistant",
            "content": [part] if status == "completed" else []}


def call_item(call_id: str, name: str, arguments: str, status: str = "completed", item_id: str | None = None) -> dict:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def usage(prompt_tokens: int, output_tokens: int, cached_tokens: int) -> dict:
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens}


def status_of(finish_reason: str | None) -> tuple[str, dict | None]:
    """(status, incomplete_details) of an answer that ended with `finish_reason`."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "abort":
        return "cancelled", None
    return "completed", None


def response_object(req: ResponsesRequest, response_id: str, created_at: int, model: str, status: str,
                    output: list[dict], usage_: dict | None, incomplete: dict | None = None) -> dict:
    """The response object; its settings echo the request's, as OpenAI's does."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status, "error": None,
        "incomplete_details": incomplete, "instructions": req.instructions, "model": model, "output": output,
        "max_output_tokens": req.max_output_tokens, "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id, "temperature": req.temperature, "top_p": req.top_p,
        "tool_choice": _tool_choice(req), "tools": [t.model_dump(by_alias=True) for t in req.tools or []],
        "text": req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {"format": {"type": "text"}},
        "truncation": req.truncation or "disabled", "top_logprobs": req.top_logprobs, "usage": usage_,
        "user": req.user, "metadata": req.metadata or {}, "store": req.store, "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
    }


def _tool_choice(req: ResponsesRequest):
    if req.tool_choice is None:
        return "auto" if req.tools else "none"
    if isinstance(req.tool_choice, str):
        return req.tool_choice
    return req.tool_choice.model_dump()


def assistant_turn(output: list[dict]) -> dict | None:
    """The chat turn an answer's output items make, for a follow-up's history (None: nothing was said)."""
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    if not text and not calls:
        return None
    turn = {"role": "assistant", "content": text or None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def input_items(req: ResponsesRequest) -> list[dict]:
    """The request's input as items with ids (what GET /v1/responses/{id}/input_items lists)."""
    if isinstance(req.input, str):
        return [{"type": "message", "id": new_id("msg"), "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": req.input}]}]
    items = []
    for item in req.input:
        entry = item.model_dump(exclude_none=True)
        entry.setdefault("type", "message")
        entry.setdefault("id", new_id("msg" if entry["type"] == "message" else "fc"))
        if isinstance(entry.get("content"), str):
            entry["content"] = [{"type": "input_text", "text": entry["content"]}]
        items.append(entry)
    return items
