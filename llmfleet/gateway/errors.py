"""The gateway's error answers, in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

The same shape `llmfleet serve` answers with, so a client sees one format whether the gateway or a replica failed.
"""
from __future__ import annotations

import json

from starlette.responses import Response

_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 502: "server_error", 503: "service_unavailable",
          504: "server_error"}


def envelope(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> Response:
    body = json.dumps(envelope(status, message, param, code)).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def sse_error(message: str, code: str = "replica_failed") -> bytes:
    """The end of a stream that broke mid-way: one error event, then [DONE]."""
    return b"data: " + json.dumps(envelope(502, message, None, code)).encode() + b"\n\ndata: [DONE]\n\n"


def json_object(body: bytes) -> dict | Response:
    """The request body as a JSON object, or the 400 answer saying why it is not one."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return error_response(400, f"the request body is not valid JSON: {exc}", None, "invalid_value")
    if not isinstance(payload, dict):
        return error_response(400, "the request body must be a JSON object", None, "invalid_value")
    return payload
