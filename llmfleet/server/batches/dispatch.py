"""One batch line through the same serving code as the HTTP route of its endpoint, and the JSONL line shapes.

An input line is `{"custom_id", "method": "POST", "url": <endpoint>, "body": <the request>}`; its result line is
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}` whatever the status (an
error answer carries OpenAI's error envelope as its body). A request refused with 429 (the server's waiting bound)
is retried after a pause rather than failed: a batch waits its turn behind interactive traffic.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from llmfleet.protocol.openai.chat import ChatCompletionRequest
from llmfleet.protocol.openai.completions import CompletionRequest
from llmfleet.protocol.openai.embeddings import EmbeddingRequest
from llmfleet.server.batches.store import new_id
from llmfleet.server.chat.serving import create_chat_completion
from llmfleet.server.completions.serving import create_completion
from llmfleet.server.context import ServingContext
from llmfleet.server.embeddings.serving import create_embedding
from llmfleet.server.errors import APIError, envelope

Handler = Callable[[BaseModel, ServingContext, Request], Awaitable]
ENDPOINTS: dict[str, tuple[type[BaseModel], Handler]] = {
    "/v1/chat/completions": (ChatCompletionRequest, create_chat_completion),
    "/v1/completions": (CompletionRequest, create_completion),
    "/v1/embeddings": (EmbeddingRequest, create_embedding),
}
_RETRY_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)   # seconds between tries of a request refused with 429, then 1 s


def parse_line(text: str, number: int, endpoint: str | None) -> tuple[dict | None, dict | None]:
    """(the line as a dict, None) or (None, an error for the batch's `errors` list). `endpoint` None: any
    supported endpoint (the offline runner); else every line's url must be it."""
    def error(code: str, message: str, param: str | None = None):
        return None, {"code": code, "message": message, "param": param, "line": number}
    try:
        line = json.loads(text)
    except ValueError as exc:
        return error("invalid_json", f"line {number} is not valid JSON: {exc}")
    if not isinstance(line, dict):
        return error("invalid_request", f"line {number} must be a JSON object")
    if not isinstance(line.get("custom_id"), str) or not line["custom_id"]:
        return error("missing_required_parameter", f"line {number}: custom_id must be a non-empty string",
                     "custom_id")
    if line.get("method", "POST") != "POST":
        return error("invalid_value", f"line {number}: method must be POST", "method")
    url = line.get("url")
    if url not in ENDPOINTS or (endpoint is not None and url != endpoint):
        expected = endpoint or " | ".join(ENDPOINTS)
        return error("invalid_url", f"line {number}: url must be {expected}, got {url!r}", "url")
    if not isinstance(line.get("body"), dict):
        return error("invalid_value", f"line {number}: body must be a JSON object", "body")
    return line, None


async def run_line(ctx: ServingContext, line: dict) -> dict:
    """The result line of one parsed input line."""
    status, body = await execute(ctx, line["url"], line["body"])
    request_id = body.get("id") if isinstance(body, dict) and status == 200 else None
    return {"id": new_id("batch_req"), "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": request_id or new_id("req"), "body": body},
            "error": None}


async def execute(ctx: ServingContext, endpoint: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON body) of one request, as its route would answer it."""
    schema, handler = ENDPOINTS[endpoint]
    try:
        request = schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        return 400, envelope(400, f"{param}: {first['msg']}" if param else first["msg"], param, "invalid_value")
    if getattr(request, "stream", False):
        return 400, envelope(400, "stream: batch requests cannot stream", "stream", "unsupported")
    for pause in (*_RETRY_PAUSES, *([1.0] * 600)):
        try:
            response = await handler(request, ctx, _no_client(endpoint))
            return response.status_code, json.loads(response.body)
        except APIError as exc:
            if exc.status != 429:
                return exc.status, envelope(exc.status, exc.message, exc.param, exc.code)
        await asyncio.sleep(pause)
    return 429, envelope(429, "the server stayed overloaded for 10 minutes", None, "queue_full")


def _no_client(path: str) -> Request:
    """A request whose client never leaves: the serving code's disconnect watch waits on it forever (and is
    cancelled when the answer is ready)."""
    async def receive() -> dict:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}, receive)
