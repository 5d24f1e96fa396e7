"""The logic of /v1/responses: the request becomes a chat request (translate.py) after the stored history of
`previous_response_id`; the answer becomes output items, whole or as a semantic event stream; stored when asked."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.outputs import CompletionOutput, RequestOutput
from llmfleet.protocol.openai.responses import ResponsesRequest, new_response_id
from llmfleet.server.chat.serving import ChatJob, prepare_chat
from llmfleet.server.chat.tool_stream import ToolStream
from llmfleet.server.chat.tools import extract, new_call_id
from llmfleet.server.common.deltas import DeltaTracker
from llmfleet.server.common.generation import collect_for, merge, submit
from llmfleet.server.common.logprobs import chat_logprobs
from llmfleet.server.common.sampling import check_unknown
from llmfleet.server.common.sse import sse_response
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError, envelope
from llmfleet.server.responses.events import EventStream, StreamedOutput
from llmfleet.server.responses.output import (assistant_turn, call_item, input_items, message_item,
                                              response_object, status_of, usage)
from llmfleet.server.responses.store import ResponseStore, StoredResponse
from llmfleet.server.responses.translate import renamed, to_chat, wants_logprobs


async def create_response(req: ResponsesRequest, ctx: ServingContext, store: ResponseStore,
                          raw: Request) -> Response:
    """Answer one /v1/responses request: JSON, or an event stream when `stream`. Raises APIError (4xx)."""
    check_unknown(req, ctx.config.lenient_requests)
    history = store.get(req.previous_response_id, "previous_response_id").history \
        if req.previous_response_id is not None else []
    chat, turns = to_chat(req, history)
    try:
        job = await prepare_chat(chat, ctx)
    except APIError as exc:
        raise renamed(exc) from None
    response_id, created = new_response_id(ctx.instance_id), int(time.time())
    sub = await submit(ctx, [job.prompt], [job.params], response_id, req.priority, "input", job.model)
    turn = _Turn(req, ctx, store, job, response_id, created, history, turns)
    if req.stream:
        return sse_response(turn.stream(sub), sub.close)
    outputs = await collect_for(raw, sub)
    if outputs is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(turn.answer(outputs[0]))


class _Turn:
    """One request's answer, built whole or streamed, then stored with the conversation it extends."""

    def __init__(self, req: ResponsesRequest, ctx: ServingContext, store: ResponseStore, job: ChatJob,
                 response_id: str, created: int, history: list[dict], turns: list[dict]):
        self.req, self.ctx, self.store, self.job = req, ctx, store, job
        self.response_id, self.created, self.history, self.turns = response_id, created, history, turns

    def answer(self, out: RequestOutput) -> dict:
        choice = _first(out)
        content, calls = extract(self.job.plan.reader, choice.text)
        output = [call_item(new_call_id(), name, arguments) for name, arguments in calls]
        if content is not None or not calls:
            output.insert(0, message_item(content or "", self._logprobs(choice, 0)))
        return self._finish(out, choice, output)

    async def stream(self, sub) -> AsyncIterator[bytes]:
        events = EventStream()
        opening = self._response(RequestOutput(self.response_id, None, [], [], False), "in_progress", [], None)
        yield events("response.created", response=opening)
        yield events("response.in_progress", response=opening)
        items, reader = StreamedOutput(events, wants_logprobs(self.req)), ToolStream(self.job.plan.reader)
        deltas, last = DeltaTracker(), RequestOutput(self.response_id, None, [], [], False)
        try:
            async for _, out in merge(sub):
                last, choice = out, _first(out)
                step = deltas.advance(0, choice)
                if step is None:
                    continue
                text, start = step
                pieces = (reader.feed(text) if text else []) + (reader.finish() if choice.finish_reason else [])
                items.note_logprobs(self._logprobs(choice, start) or [])
                for piece in pieces:
                    for chunk in items.feed(piece):
                        yield chunk
        except EngineDeadError as exc:
            yield events("error", **envelope(503, str(exc), None, "engine_dead")["error"])
            return
        for chunk in items.finish():
            yield chunk
        final = self._finish(last, _first(last), items.items)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield events(kind, response=final)

    def _finish(self, out: RequestOutput, choice: CompletionOutput, output: list[dict]) -> dict:
        status, incomplete = status_of(choice.finish_reason)
        response = self._response(out, status, output, incomplete)
        if self.req.store:
            turn = assistant_turn(output)
            history = self.history + self.turns + ([turn] if turn is not None else [])
            self.store.put(self.response_id, StoredResponse(response, history, input_items(self.req)))
        return response

    def _response(self, out: RequestOutput, status: str, output: list[dict], incomplete: dict | None) -> dict:
        used = usage(len(self.job.prompt), sum(len(c.token_ids) for c in out.outputs), out.num_cached_tokens or 0) \
            if status != "in_progress" else None
        return response_object(self.req, self.response_id, self.created, self.job.model, status, output, used,
                               incomplete)

    def _logprobs(self, choice: CompletionOutput, start: int) -> list[dict] | None:
        if not wants_logprobs(self.req):
            return None
        raw = chat_logprobs(choice, start, len(choice.token_ids), self.req.top_logprobs or 0, self.ctx.tokenizer)
        return raw["content"] if raw is not None else []


def _first(out: RequestOutput) -> CompletionOutput:
    return out.outputs[0] if out.outputs else CompletionOutput(0, "", [], "abort")


