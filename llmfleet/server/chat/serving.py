"""The logic of /v1/chat/completions: render the messages with the chat template, run, answer whole or as SSE.

A stream opens each choice with a `{"role": "assistant", "content": ""}` delta, then sends content deltas (and
tool-call deltas, chat/tool_stream.py); the chunk that finishes a choice carries its finish_reason. Tools, tool
choices and their calls: chat/tools.py; structured outputs: common/structured.py.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.outputs import CompletionOutput, RequestOutput
from llmfleet.protocol.openai.chat import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk,
                                           ChatCompletionRequest, ChatCompletionResponse, ChoiceLogprobs,
                                           DeltaMessage, ToolCall)
from llmfleet.protocol.structured import StructuredSpec
from llmfleet.server.chat.tool_stream import ToolStream
from llmfleet.server.chat.tools import ToolPlan, extract, finish_reason, plan_tools, tool_calls
from llmfleet.server.common.deltas import DeltaTracker
from llmfleet.server.common.generation import Submission, collect_for, merge, submit
from llmfleet.server.common.logprobs import chat_logprobs
from llmfleet.server.common.prompts import chat_prompt
from llmfleet.protocol.openai.common import UsageInfo
from llmfleet.server.common.sampling import build_params, check_unsupported, resolve_max_tokens
from llmfleet.server.common.structured import structured_spec
from llmfleet.server.common.sse import DONE, error_event, event, sse_response
from llmfleet.server.common.text import check_text
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError


async def create_chat_completion(req: ChatCompletionRequest, ctx: ServingContext, raw: Request) -> Response:
    """Answer one /v1/chat/completions request: JSON, or SSE when `stream`. Raises APIError for bad requests."""
    check_text(req)
    model = ctx.resolve_model(req.model)
    _check_fields(req)
    plan, structured = _constraints(req, ctx)
    prompt = await chat_prompt(_template_messages(req), ctx.tokenizers, ctx.max_prompt_chars,
                               req.add_generation_prompt, plan.template_tools)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = resolve_max_tokens(requested, None, len(prompt), ctx.max_model_len, "messages")
    params = build_params(req, max_tokens, _top_n(req), structured)
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    sub = await submit(ctx, [prompt], [params], request_id, req.priority, "messages")
    if req.stream:
        return sse_response(_stream(req, ctx, plan, sub, len(prompt), request_id, created, model), sub.close)
    outputs = await collect_for(raw, sub)
    if outputs is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(_response(req, ctx, plan, outputs[0], len(prompt), request_id, created,
                                  model).model_dump(mode="json"))


def _check_fields(req: ChatCompletionRequest) -> None:
    check_unsupported(req)
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs: requires logprobs to be true", "top_logprobs", "invalid_value")


def _constraints(req: ChatCompletionRequest, ctx: ServingContext) -> tuple[ToolPlan, StructuredSpec | None]:
    """The request's tool plan and its one grammar (a required / named tool choice, or a structured output)."""
    plan = plan_tools(req, ctx.config.tool_call_parser)
    structured = structured_spec(req)
    if plan.spec is None:
        return plan, structured
    if structured is not None:
        raise APIError(400, "tool_choice: a required or named tool choice already constrains the answer; drop the "
                            "structured-output field", "tool_choice", "invalid_value")
    return plan, plan.spec


def _top_n(req: ChatCompletionRequest) -> int | None:
    return (req.top_logprobs or 0) if req.logprobs else None


def _template_messages(req: ChatCompletionRequest) -> list[dict]:
    """Messages as chat templates expect them: content as one string (text parts joined by newlines)."""
    messages = []
    for i, message in enumerate(req.messages):
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise APIError(400, f"messages.{i}.content: only text parts are supported",
                               f"messages.{i}.content", "unsupported")
            content = "\n".join(part.text for part in content)
        entry = {"role": message.role, "content": content or ""}
        if message.name is not None:
            entry["name"] = message.name
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            entry["tool_calls"] = [_template_call(call) for call in message.tool_calls]
        messages.append(entry)
    return messages


def _template_call(call: ToolCall) -> dict:
    """A past call as chat templates read it: arguments as an object where they parse (most templates write them
    out with `tojson`), else the text as sent."""
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}


def _logprobs(req: ChatCompletionRequest, ctx: ServingContext, out: CompletionOutput,
              start: int) -> ChoiceLogprobs | None:
    if not req.logprobs:
        return None
    raw = chat_logprobs(out, start, len(out.token_ids), req.top_logprobs or 0, ctx.tokenizer)
    return ChoiceLogprobs(**raw) if raw is not None else None


def _usage(prompt_len: int, out: RequestOutput) -> UsageInfo:
    return UsageInfo.of(prompt_len, sum(len(c.token_ids) for c in out.outputs), out.num_cached_tokens)


def _response(req: ChatCompletionRequest, ctx: ServingContext, plan: ToolPlan, out: RequestOutput,
              prompt_len: int, request_id: str, created: int, model: str) -> ChatCompletionResponse:
    by_index = {c.index: c for c in out.outputs}
    choices = []
    for i in range(req.n):
        c = by_index.get(i) or CompletionOutput(i, "", [], "abort")  # aborted before its first token
        content, calls = extract(plan.reader, c.text)
        message = AssistantMessage(content=content, tool_calls=tool_calls(calls))
        choices.append(ChatChoice(index=i, message=message, logprobs=_logprobs(req, ctx, c, 0),
                                  finish_reason=finish_reason(c.finish_reason, bool(calls)),
                                  stop_reason=c.stop_reason))
    return ChatCompletionResponse(id=request_id, created=created, model=model, choices=choices,
                                  usage=_usage(prompt_len, out))


async def _stream(req: ChatCompletionRequest, ctx: ServingContext, plan: ToolPlan, sub: Submission, prompt_len: int,
                  request_id: str, created: int, model: str) -> AsyncIterator[bytes]:
    exclude = None if req.include_usage else {"usage"}

    def chunk(choice: ChatChunkChoice) -> bytes:
        body = ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice])
        return event(body.model_dump_json(exclude=exclude))

    for i in range(req.n):
        yield chunk(ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")))
    deltas, last = DeltaTracker(), RequestOutput(request_id, None, [], [], False)
    streams = [ToolStream(plan.reader) for _ in range(req.n)]
    try:
        async for _, out in merge(sub):
            last = out
            for c in out.outputs:
                step = deltas.advance(c.index, c)
                if step is None:
                    continue
                text, start = step
                stream = streams[c.index]
                pieces = stream.feed(text) if text else []
                if c.finish_reason is not None:
                    pieces += stream.finish()
                if not pieces and (req.logprobs or c.finish_reason is not None):
                    pieces = [DeltaMessage()]
                for k, piece in enumerate(pieces):
                    end = k == len(pieces) - 1
                    yield chunk(ChatChunkChoice(
                        index=c.index, delta=piece, logprobs=_logprobs(req, ctx, c, start) if k == 0 else None,
                        finish_reason=finish_reason(c.finish_reason, stream.called) if end else None,
                        stop_reason=c.stop_reason if end else None))
    except EngineDeadError as exc:
        yield error_event(503, str(exc), "engine_dead")
        yield DONE
        return
    for i in range(req.n):
        if not deltas.finished(i):  # aborted before its first token
            yield chunk(ChatChunkChoice(index=i, delta=DeltaMessage(), finish_reason="abort"))
    if req.include_usage:
        usage = _usage(prompt_len, last)
        body = ChatCompletionChunk(id=request_id, created=created, model=model, choices=[], usage=usage)
        yield event(body.model_dump_json())
    yield DONE
