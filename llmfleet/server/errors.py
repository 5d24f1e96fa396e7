"""One error envelope for every failure, shaped like OpenAI's: {"error": {"message", "type", "param", "code"}}.

Handlers raise APIError; FastAPI's validation errors, HTTP errors (404 route, 405 method) and anything unexpected are
re-shaped here, so a client never sees another format. Pure-ASGI middleware uses `envelope_bytes` directly.
"""
from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    """An error answer: HTTP status, message, and the OpenAI envelope's param/code; Retry-After when set."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after

    @classmethod
    def from_value_error(cls, exc: ValueError, default_param: str | None = None) -> "APIError":
        """A ValueError whose message starts with `field: ...` (our convention) names that field as param."""
        message = str(exc)
        match = re.match(r"([A-Za-z_][A-Za-z0-9_.]*): ", message)
        return cls(400, message, match.group(1) if match else default_param, "invalid_value")


def envelope(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error body; `type` follows from the status. Lone surrogates a client sent (and a message may quote)
    are escaped, so the body always encodes."""
    return {"error": {"message": _printable(message), "type": _TYPES.get(status, "invalid_request_error"),
                      "param": _printable(param), "code": code}}


def _printable(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def envelope_bytes(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(envelope(status, message, param, code)).encode()


def error_response(exc: APIError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(envelope(exc.status, exc.message, exc.param, exc.code), exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the envelope."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    code = _validation_code(first.get("type", ""))
    if first.get("type") == "json_invalid":
        message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
        param, code = None, "invalid_json"
    else:
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return error_response(APIError(400, message, param, code))


def _validation_code(kind: str) -> str:
    """pydantic's error type to the envelope's code: a missing field, a value of the wrong type (strict parsing:
    `true` is no number, "5" no integer), or a value out of range or otherwise refused."""
    if kind == "missing":
        return "missing_required_parameter"
    if kind.endswith("_type"):  # int_type, float_type, bool_type, string_type, list_type, dict_type, model_type
        return "invalid_type"
    return "invalid_value"


_HTTP_CODES = {400: "invalid_json", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
               413: "request_too_large"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail) if exc.detail else "error"
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 400:  # FastAPI's "There was an error parsing the body": e.g. JSON nested too deeply
        message = f"the request body could not be parsed as JSON ({message})"
    return error_response(APIError(exc.status_code, message, None, code))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # RequestIdMiddleware answers unexpected errors first (with the request id); this covers errors outside it.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(APIError(500, f"internal error: {type(exc).__name__}", None, "internal_error"))
