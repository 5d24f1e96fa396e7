"""A /v1/responses stream: semantic events (`event: <type>` + `data: {json}`), numbered, in OpenAI's order.

created, in_progress; per output item: output_item.added, then for a message content_part.added, output_text
deltas, output_text.done, content_part.done, or for a function call its arguments delta and done; then
output_item.done; last completed (or incomplete). The items are fed from the chat tool streamer's deltas, so the
streamed items equal the non-streamed answer.
"""
from __future__ import annotations

import json

from llmfleet.protocol.openai.chat import DeltaMessage
from llmfleet.server.responses.output import call_item, message_item, new_id


class EventStream:
    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()


class StreamedOutput:
    """The output items of one streamed answer, and the events that open, extend and close them."""

    def __init__(self, events: EventStream, with_logprobs: bool):
        self.events, self.with_logprobs = events, with_logprobs
        self.items: list[dict] = []          # closed items, in output order
        self._text: str | None = None        # the open message's text so far (None: no message open)
        self._message_id = ""
        self._logprobs: list[dict] = []      # the open message's token logprobs sent so far
        self._pending: list[dict] = []       # logprobs of tokens whose text is not sent yet

    def note_logprobs(self, logprobs: list[dict]) -> None:
        """New tokens' logprobs: they ride on the next text delta (a token can end inside a character)."""
        self._pending += logprobs

    def feed(self, piece: DeltaMessage) -> list[bytes]:
        """Events for one delta of the chat streamer (content, or a call's opening / its arguments)."""
        if piece.content:
            return self._content(piece.content)
        out = []
        for call in piece.tool_calls or []:
            if call.id is not None:  # a call opens: its name; the arguments follow in the next delta
                out += self._close_message()
                item = call_item(call.id, call.function.name, "", status="in_progress")
                self.items.append(item)
                out.append(self.events("response.output_item.added", output_index=len(self.items) - 1, item=item))
            else:
                out += self._arguments(call.function.arguments or "")
        return out

    def finish(self) -> list[bytes]:
        """Close what is open; an answer with no items at all still gets its (empty) message."""
        if not self.items and self._text is None:
            return self._open_message() + self._close_message()
        return self._close_message()

    def _content(self, text: str) -> list[bytes]:
        out = self._open_message() if self._text is None else []
        self._text += text
        logprobs, self._pending = self._pending, []
        self._logprobs += logprobs
        out.append(self.events("response.output_text.delta", item_id=self._message_id, output_index=len(self.items),
                               content_index=0, delta=text, logprobs=logprobs))
        return out

    def _open_message(self) -> list[bytes]:
        self._text, self._message_id, self._logprobs = "", new_id("msg"), []
        item = message_item("", None, status="in_progress", item_id=self._message_id)
        where = {"item_id": self._message_id, "output_index": len(self.items)}
        return [self.events("response.output_item.added", output_index=len(self.items), item=item),
                self.events("response.content_part.added", **where, content_index=0,
                            part={"type": "output_text", "text": "", "annotations": []})]

    def _close_message(self) -> list[bytes]:
        if self._text is None:
            return []
        self._logprobs, self._pending = self._logprobs + self._pending, []
        item = message_item(self._text, self._logprobs if self.with_logprobs else None, item_id=self._message_id)
        where = {"item_id": self._message_id, "output_index": len(self.items)}
        out = [self.events("response.output_text.done", **where, content_index=0, text=self._text,
                           logprobs=self._logprobs),
               self.events("response.content_part.done", **where, content_index=0, part=item["content"][0]),
               self.events("response.output_item.done", output_index=len(self.items), item=item)]
        self.items.append(item)
        self._text = None
        return out

    def _arguments(self, arguments: str) -> list[bytes]:
        item = self.items[-1]
        item["arguments"], item["status"] = arguments, "completed"
        where = {"item_id": item["id"], "output_index": len(self.items) - 1}
        return [self.events("response.function_call_arguments.delta", **where, delta=arguments),
                self.events("response.function_call_arguments.done", **where, arguments=arguments),
                self.events("response.output_item.done", output_index=len(self.items) - 1, item=item)]
