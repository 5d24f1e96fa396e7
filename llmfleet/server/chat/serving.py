"""The logic of /v1/chat/completions: render the messages with the chat template, run, answer whole or as SSE.

A stream opens each choice with a `{"role": "assistant", "content": ""}` delta, then sends content deltas (and
tool-call deltas, chat/tool_stream.py); the chunk that finishes a choice carries its finish_reason. With `echo` and
an assistant message last, that message's content starts each answer (in a stream, it is the opening delta's
content). Tools, tool choices and their calls: chat/tools.py; structured outputs: common/structured.py.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.outputs import CompletionOutput, RequestOutput
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.protocol.openai.chat import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk,
                                           ChatCompletionRequest, ChatCompletionResponse, ChoiceLogprobs,
                                           DeltaMessage)
from llmfleet.protocol.structured import StructuredSpec
from llmfleet.server.chat.messages import render_options, template_messages
from llmfleet.server.chat.tool_stream import ToolStream
from llmfleet.server.chat.tools import ToolPlan, extract, finish_reason, plan_tools, tool_calls
from llmfleet.server.common.deltas import DeltaTracker
from llmfleet.server.common.generation import Submission, collect_for, merge, submit
from llmfleet.server.common.logprobs import chat_logprobs, prompt_logprobs_field
from llmfleet.server.common.prompts import chat_prompt
from llmfleet.protocol.openai.common import UsageInfo
from llmfleet.server.common.sampling import build_params, check_fields, resolve_max_tokens
from llmfleet.server.common.structured import structured_spec
from llmfleet.server.common.sse import DONE, error_event, event, sse_response
from llmfleet.server.common.text import check_text
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError


@dataclass(slots=True)
class ChatJob:
    """A checked chat request ready for the engine: its rendered prompt, sampling and how answers are read back."""
    messages: list[dict]
    plan: ToolPlan
    prompt: list[int]
    params: SamplingParams
    model: str


async def prepare_chat(req: ChatCompletionRequest, ctx: ServingContext) -> ChatJob:
    """Check `req`, render its messages with the chat template and build its sampling (shared by /v1/responses).
    Raises APIError for bad requests."""
    messages = template_messages(req)
    check_fields(req, ctx.config.lenient_requests)
    check_text(req)
    model = ctx.resolve_model(req.model)
    _check_fields(req)
    plan, structured = _constraints(req, ctx)
    prompt = await chat_prompt(messages, ctx.tokenizers, ctx.max_prompt_chars, render_options(req),
                               plan.template_tools)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = resolve_max_tokens(requested, None, len(prompt), ctx.max_model_len, "messages")
    params = build_params(req, max_tokens, _top_n(req), structured=structured, prompt_logprobs=req.prompt_logprobs)
    return ChatJob(messages, plan, prompt, params, model)


async def create_chat_completion(req: ChatCompletionRequest, ctx: ServingContext, raw: Request) -> Response:
    """Answer one /v1/chat/completions request: JSON, or SSE when `stream`. Raises APIError for bad requests."""
    job = await prepare_chat(req, ctx)
    plan, prompt, model = job.plan, job.prompt, job.model
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    sub = await submit(ctx, [prompt], [job.params], request_id, req.priority, "messages", job.model)
    echo = _echo(req, job.messages)
    if req.stream:
        return sse_response(_stream(req, ctx, plan, sub, len(prompt), echo, request_id, created, model), sub.close)
    outputs = await collect_for(raw, sub)
    if outputs is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(_response(req, ctx, plan, outputs[0], len(prompt), echo, request_id, created,
                                  model).model_dump(mode="json"))


def _echo(req: ChatCompletionRequest, messages: list[dict]) -> str:
    """What `echo` puts before each answer: the last message's content when it is the assistant's."""
    return messages[-1]["content"] if req.echo and messages[-1]["role"] == "assistant" else ""


def _check_fields(req: ChatCompletionRequest) -> None:
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs: requires logprobs to be true", "top_logprobs", "invalid_value")
    if req.prompt_logprobs is not None and req.stream:
        raise APIError(400, "prompt_logprobs: not available when stream is true", "prompt_logprobs",
                       "invalid_value")


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


def _logprobs(req: ChatCompletionRequest, ctx: ServingContext, out: CompletionOutput,
              start: int) -> ChoiceLogprobs | None:
    if not req.logprobs:
        return None
    raw = chat_logprobs(out, start, len(out.token_ids), req.top_logprobs or 0, ctx.tokenizer)
    return ChoiceLogprobs(**raw) if raw is not None else None


def _usage(prompt_len: int, out: RequestOutput) -> UsageInfo:
    return UsageInfo.of(prompt_len, sum(len(c.token_ids) for c in out.outputs), out.num_cached_tokens)


def _response(req: ChatCompletionRequest, ctx: ServingContext, plan: ToolPlan, out: RequestOutput, prompt_len: int,
              echo: str, request_id: str, created: int, model: str) -> ChatCompletionResponse:
    by_index = {c.index: c for c in out.outputs}
    choices = []
    for i in range(req.n):
        c = by_index.get(i) or CompletionOutput(i, "", [], "abort")  # aborted before its first token
        content, calls = extract(plan.reader, c.text)
        if echo:
            content = echo + (content or "")
        message = AssistantMessage(content=content, tool_calls=tool_calls(calls))
        choices.append(ChatChoice(index=i, message=message, logprobs=_logprobs(req, ctx, c, 0),
                                  finish_reason=finish_reason(c.finish_reason, bool(calls)),
                                  stop_reason=c.stop_reason))
    prompt_logprobs = prompt_logprobs_field(out.prompt_logprobs) if req.prompt_logprobs is not None else None
    return ChatCompletionResponse(id=request_id, created=created, model=model, choices=choices,
                                  usage=_usage(prompt_len, out), prompt_logprobs=prompt_logprobs)


async def _stream(req: ChatCompletionRequest, ctx: ServingContext, plan: ToolPlan, sub: Submission, prompt_len: int,
                  echo: str, request_id: str, created: int, model: str) -> AsyncIterator[bytes]:
    exclude = None if req.include_usage else {"usage"}
    deltas, last = DeltaTracker(), RequestOutput(request_id, None, [], [], False)
    streams = [ToolStream(plan.reader) for _ in range(req.n)]

    def chunk(choice: ChatChunkChoice) -> bytes:
        usage = _usage(prompt_len, last) if req.continuous_usage else None  # continuous_usage_stats
        body = ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice], usage=usage)
        return event(body.model_dump_json(exclude=exclude))

    for i in range(req.n):
        yield chunk(ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=echo)))
    try:
        async for _, out in merge(sub):
            last = out
            for c in out.outputs:
                step = deltas.advance(c.index, c)
                if step is None:
                    continue
                for piece in _pieces(req, ctx, c, step, streams[c.index]):
                    yield chunk(piece)
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


def _pieces(req: ChatCompletionRequest, ctx: ServingContext, c: CompletionOutput, step: tuple[str, int],
            stream: ToolStream) -> list[ChatChunkChoice]:
    """The chunk choices of one choice's new text: content and tool-call deltas; the last carries the finish."""
    text, start = step
    pieces = stream.feed(text) if text else []
    if c.finish_reason is not None:
        pieces += stream.finish()
    if not pieces and (req.logprobs or c.finish_reason is not None):
        pieces = [DeltaMessage()]
    out = []
    for k, piece in enumerate(pieces):
        end = k == len(pieces) - 1
        out.append(ChatChunkChoice(
            index=c.index, delta=piece, logprobs=_logprobs(req, ctx, c, start) if k == 0 else None,
            finish_reason=finish_reason(c.finish_reason, stream.called) if end else None,
            stop_reason=c.stop_reason if end else None))
    return out
