"""Tenancy's answers in OpenAI's error envelope, and OpenAI's rate-limit headers.

Tenancy sits below the server (it mounts on the server and on the gateway alike), so it builds the envelope itself
in the same shape: {"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import json
import math

from starlette.types import Send

_TYPES = {401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


class TenancyError(Exception):
    """An error answer: status, message, the envelope's param/code, and extra headers (Retry-After, limits)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None, type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or []
        self.type = type_ or _TYPES.get(status, "invalid_request_error")

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


async def send_json(send: Send, status: int, payload: bytes, headers: list | None = None) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, error: TenancyError) -> None:
    await send_json(send, error.status, error.body(), error.headers)


def reset_text(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s", "1h2m3s" (ms below a second)."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = int(math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(status) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits the key has (see limits.LimitStatus)."""
    headers = []
    for kind, limit, remaining in (("requests", status.rpm_limit, status.rpm_remaining),
                                   ("tokens", status.tpm_limit, status.tpm_remaining)):
        if limit is None:
            continue
        headers += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, remaining)).encode()),
                    (f"x-ratelimit-reset-{kind}".encode(), reset_text(status.reset_s).encode())]
    return headers
