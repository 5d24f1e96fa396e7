"""Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from llmfleet.server.errors import envelope

DONE = b"data: [DONE]\n\n"


def event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def error_event(status: int, message: str, code: str | None) -> bytes:
    """A failure after the 200 header went out: the envelope as one more event (then [DONE])."""
    return event(json.dumps(envelope(status, message, None, code)))


class _ClosingStreamingResponse(StreamingResponse):
    """Runs `on_close` however the response ends: finished, failed, or cancelled by a client that left (possibly
    before the body was first iterated, when the body's own cleanup never runs)."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs):
        super().__init__(body, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse_response(body: AsyncIterator[bytes], on_close: Callable[[], None]) -> StreamingResponse:
    """The event stream of `body`; `on_close` (e.g. closing the engine streams) runs when the response ends."""
    return _ClosingStreamingResponse(body, on_close, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
