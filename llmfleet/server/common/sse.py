"""Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from llmfleet.server.errors import envelope

DONE = b"data: [DONE]\n\n"


def event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def error_event(status: int, message: str, code: str | None) -> bytes:
    """A failure after the 200 header went out: the envelope as one more event (then [DONE])."""
    return event(json.dumps(envelope(status, message, None, code)))


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
