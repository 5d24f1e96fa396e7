"""Chat completions grounded in vector stores: a pure-ASGI middleware in front of /v1/chat/completions.

A request names stores either with the extension field `"vector_store_ids": [...]` (plus optional
`"file_search": {"max_num_results": n, "filters": {...}}`) or OpenAI-style with a tool
`{"type": "file_search", "vector_store_ids": [...], "max_num_results": n, "filters": {...}}`. The middleware
searches those stores as the caller (team and ACLs apply), puts the chunks into a system message with numbered
sources, removes the extension from the body, and passes the request on. A JSON answer gets
`choices[i].message.annotations` (file citations) and `search_results`; a stream gets the citations in the
`x-llmfleet-citations` header (JSON), its events untouched.
"""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmfleet.apps.asgi import read_body, replay
from llmfleet.apps.retrieval.http import error, reader_of
from llmfleet.apps.retrieval.service import ApiError, RetrievalService

CHAT_PATH = "/v1/chat/completions"


class RetrievalChatMiddleware:
    def __init__(self, app: ASGIApp, service: RetrievalService):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            return await self.app(scope, receive, send)
        raw = await read_body(receive)
        if raw is None:
            return  # the client left before sending its request
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        spec = _file_search(body) if isinstance(body, dict) else None
        if spec is None:
            return await self.app(scope, replay(raw, receive), send)
        try:
            results = await self._search(scope, body, spec)
        except ApiError as exc:
            return await error(exc.status, exc.message, exc.code, exc.param)(scope, receive, send)
        body = _grounded(body, results)
        raw = json.dumps(body).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": headers + [(b"content-length", str(len(raw)).encode())]}
        await self.app(scope, replay(raw, receive), _citing(send, results, bool(body.get("stream"))))

    async def _search(self, scope: Scope, body: dict, spec: dict) -> list[dict]:
        if not spec["vector_store_ids"]:
            raise ApiError(400, "vector_store_ids: a non-empty list of vector store ids expected", "invalid_value",
                           "vector_store_ids")
        query = _last_user_text(body.get("messages"))
        if not query:
            raise ApiError(400, "messages: file search needs a user message with text", "invalid_value", "messages")
        who, results = reader_of(scope), []
        search = {"query": query, "max_num_results": spec["max_num_results"]}
        if spec.get("filters") is not None:
            search["filters"] = spec["filters"]
        for store_id in spec["vector_store_ids"]:
            results += (await self.service.search(who, store_id, search))["data"]
        results.sort(key=lambda hit: -hit["score"])
        return results[:spec["max_num_results"]]


def _file_search(body: dict) -> dict | None:
    """{"vector_store_ids", "max_num_results", "filters"} from the extension field or a file_search tool; removes
    them from `body` (malformed values are answered 400 by `_search`)."""
    tools = body.get("tools") or []
    tool = next((t for t in tools if isinstance(t, dict) and t.get("type") == "file_search"), None)
    if tool is not None:
        body["tools"] = [t for t in tools if t is not tool] or None
        if body["tools"] is None:
            body.pop("tools")
            body.pop("tool_choice", None)
        spec = tool
    elif "vector_store_ids" in body:
        spec = {"vector_store_ids": body.pop("vector_store_ids"), **(body.pop("file_search", None) or {})}
    else:
        return None
    ids = spec.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        ids = []
    return {"vector_store_ids": ids, "max_num_results": spec.get("max_num_results", 5), "filters": spec.get("filters")}


def _last_user_text(messages) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content.strip() if isinstance(content, str) else ""
    return ""


def _grounded(body: dict, results: list[dict]) -> dict:
    """`body` with a system message of numbered sources before the conversation."""
    sources = "\n\n".join(f"[{i}] {hit['filename']}:\n{hit['content'][0]['text']}" for i, hit in enumerate(results, 1))
    text = ("Answer using the sources below when they are relevant, citing them as [n].\n\n" + sources
            if results else "No source was found for this question; say so if it needs one.")
    return {**body, "messages": [{"role": "system", "content": text}, *body["messages"]]}


def citations(results: list[dict]) -> list[dict]:
    return [{"type": "file_citation", "index": i, "file_id": hit["file_id"], "filename": hit["filename"]}
            for i, hit in enumerate(results, 1)]


def _citing(send: Send, results: list[dict], stream: bool) -> Send:
    """A `send` that adds citations: to the JSON answer, or as a header of a stream."""
    held: list[Message] = []

    async def wrapped(message: Message) -> None:
        if stream:
            if message["type"] == "http.response.start":
                cited = json.dumps(citations(results)).encode()
                message = {**message, "headers": [*message.get("headers", []), (b"x-llmfleet-citations", cited)]}
            return await send(message)
        held.append(message)     # a JSON answer: rewritten whole once complete
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await _send_cited(send, held, results)

    return wrapped


async def _send_cited(send: Send, held: list[Message], results: list[dict]) -> None:
    start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
    try:
        answer = json.loads(body)
        for choice in answer.get("choices", []):
            choice.setdefault("message", {})["annotations"] = citations(results)
        answer["search_results"] = results
        body = json.dumps(answer).encode()
    except (json.JSONDecodeError, AttributeError, TypeError):
        pass                     # an error answer or something unexpected: passed on as it is
    headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
    await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


