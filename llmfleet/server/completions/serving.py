"""The logic of /v1/completions: validate, submit one engine request per prompt, answer whole or as SSE.

Choice i of prompt p has index p * n + i, as OpenAI numbers them. Outputs are cumulative; each stream chunk carries
the text and logprobs added since the previous one for that choice. With `echo` each choice's text starts with its
prompt's text (in a stream, its first chunk's), and with `logprobs` the prompt's tokens start its logprobs (the
first with none); `prompt_logprobs` come with each choice (a stream's first chunk of it) in vLLM's shape.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.outputs import CompletionOutput, RequestOutput
from llmfleet.server.common.deltas import DeltaTracker
from llmfleet.server.common.generation import Submission, collect_for, merge, submit
from llmfleet.server.common.logprobs import completion_logprobs, echo_logprobs, prompt_logprobs_field
from llmfleet.server.common.prompts import completion_prompts, echo_texts, fill_in_the_middle
from llmfleet.protocol.openai.common import UsageInfo
from llmfleet.server.common.sampling import build_params, check_fields, resolve_max_tokens
from llmfleet.server.common.sse import DONE, error_event, event, sse_response
from llmfleet.server.common.text import check_text
from llmfleet.protocol.openai.completions import (CompletionChoice, CompletionLogprobs, CompletionRequest,
                                                  CompletionResponse, CompletionStreamResponse)
from llmfleet.server.common.structured import structured_spec
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


async def create_completion(req: CompletionRequest, ctx: ServingContext, raw: Request) -> Response:
    """Answer one /v1/completions request: JSON, or SSE when `stream`. Raises APIError for bad requests."""
    check_fields(req, ctx.config.lenient_requests)
    check_text(req)
    model = ctx.resolve_model(req.model)
    _check_fields(req)
    structured = structured_spec(req)
    prompts = await completion_prompts(req.prompt, ctx.tokenizers, req.n, ctx.config.max_waiting_requests,
                                       ctx.max_prompt_chars)
    if req.suffix is not None:
        prompts = await fill_in_the_middle(prompts, req.suffix, ctx.tokenizers)
    echoes = await echo_texts(req.prompt, prompts, ctx.tokenizers) if req.echo else None
    requested, default = _max_tokens_asked(req)
    params = [build_params(req, resolve_max_tokens(requested, default, len(p), ctx.max_model_len, "prompt"),
                           req.logprobs, best_of=req.best_of, prompt_logprobs=_prompt_top_n(req),
                           structured=structured) for p in prompts]
    request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    sub = await submit(ctx, prompts, params, request_id, req.priority, "prompt", model)
    if req.stream:
        return sse_response(_stream(req, ctx, sub, prompts, echoes, request_id, created, model), sub.close)
    outputs = await collect_for(raw, sub)
    if outputs is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    body = _response(req, ctx, outputs, prompts, echoes, request_id, created, model)
    return JSONResponse(body.model_dump(mode="json"))


def _check_fields(req: CompletionRequest) -> None:
    if req.best_of is not None and req.best_of > req.n and req.stream:
        raise APIError(400, "best_of: cannot be streamed when best_of > n (the best samples are known only at the "
                            "end)", "best_of", "invalid_value")
    if req.echo and req.suffix is not None:
        raise APIError(400, "suffix: cannot be combined with echo", "suffix", "invalid_value")


def _max_tokens_asked(req: CompletionRequest) -> tuple[int | None, int | None]:
    """(requested, default): unset means OpenAI's default of 16 (clipped to fit); an explicit null, no limit."""
    if "max_tokens" not in req.model_fields_set:
        return None, DEFAULT_MAX_TOKENS
    return req.max_tokens, None


def _prompt_top_n(req: CompletionRequest) -> int | None:
    """Prompt logprobs to compute: those asked for, and the top-N of `logprobs` for an echoed prompt."""
    asked = [n for n in (req.prompt_logprobs, req.logprobs if req.echo else None) if n is not None]
    return max(asked) if asked else None


def _choice(req: CompletionRequest, ctx: ServingContext, index: int, out: CompletionOutput, text: str,
            start: int, text_offset: int, prompt: RequestOutput | None = None) -> CompletionChoice:
    """One choice's text and tokens from token `start` on; `prompt` (its request's output) when this is the
    choice's first chunk: the echoed prompt's logprobs and the prompt logprobs come with it. With echo, the
    generated text starts at `text_offset` (the echoed text's length)."""
    logprobs = None
    if req.logprobs is not None:
        raw = completion_logprobs(out, start, len(out.token_ids), text_offset, ctx.tokenizer)
        if prompt is not None and req.echo:
            raw = _joined(echo_logprobs(prompt.prompt_token_ids, prompt.prompt_logprobs, req.logprobs,
                                        text[:text_offset], ctx.tokenizer), raw)
        logprobs = CompletionLogprobs(**raw) if raw is not None else None
    prompt_logprobs = None
    if prompt is not None and req.prompt_logprobs is not None:
        prompt_logprobs = prompt_logprobs_field(prompt.prompt_logprobs)
    return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=out.finish_reason,
                            stop_reason=out.stop_reason, prompt_logprobs=prompt_logprobs)


def _joined(first: dict, then: dict | None) -> dict:
    return first if then is None else {key: first[key] + then[key] for key in first}


def _usage(prompts: list[list[int]], outputs: list[RequestOutput]) -> UsageInfo:
    generated = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    return UsageInfo.of(sum(map(len, prompts)), generated, sum(out.num_cached_tokens for out in outputs))


def _response(req: CompletionRequest, ctx: ServingContext, outputs: list[RequestOutput], prompts: list[list[int]],
              echoes: list[str] | None, request_id: str, created: int, model: str) -> CompletionResponse:
    choices = []
    for p, out in enumerate(outputs):
        by_index = {c.index: c for c in out.outputs}
        for i in range(req.n):
            c = by_index.get(i) or CompletionOutput(i, "", [], "abort")  # aborted before its first token
            text = echoes[p] + c.text if echoes else c.text
            choices.append(_choice(req, ctx, p * req.n + i, c, text, 0, len(echoes[p]) if echoes else 0, out))
    return CompletionResponse(id=request_id, created=created, model=model, choices=choices,
                              usage=_usage(prompts, outputs))


def _usage_so_far(req: CompletionRequest, prompts: list[list[int]], last: dict) -> UsageInfo | None:
    """stream_options.continuous_usage_stats: every chunk carries the usage up to it."""
    return _usage(prompts, list(last.values())) if req.continuous_usage else None


async def _stream(req: CompletionRequest, ctx: ServingContext, sub: Submission, prompts: list[list[int]],
                  echoes: list[str] | None, request_id: str, created: int, model: str) -> AsyncIterator[bytes]:
    exclude = None if req.include_usage else {"usage"}
    deltas, offsets, last = DeltaTracker(), {}, {}
    try:
        async for p, out in merge(sub):
            last[p] = out
            for c in out.outputs:
                step = deltas.advance((p, c.index), c)
                if step is None:
                    continue
                text, start = step
                key, first = (p, c.index), (p, c.index) not in offsets  # first: the echo and prompt logprobs
                if first:
                    offsets[key] = len(echoes[p]) if echoes else 0  # where the generated text starts
                    text = echoes[p] + text if echoes else text
                choice = _choice(req, ctx, p * req.n + c.index, c, text, start, offsets[key], out if first else None)
                generated = len(c.token_ids) - start
                if choice.logprobs is not None and generated > 0:
                    offsets[key] += sum(map(len, choice.logprobs.tokens[-generated:]))
                chunk = CompletionStreamResponse(id=request_id, created=created, model=model, choices=[choice],
                                                 usage=_usage_so_far(req, prompts, last))
                yield event(chunk.model_dump_json(exclude=exclude))
    except EngineDeadError as exc:
        yield error_event(503, str(exc), "engine_dead")
        yield DONE
        return
    for p in range(len(prompts)):
        for i in range(req.n):
            if not deltas.finished((p, i)):  # aborted before its first token
                choice = CompletionChoice(index=p * req.n + i, text="", finish_reason="abort")
                yield event(CompletionStreamResponse(id=request_id, created=created, model=model,
                                                     choices=[choice]).model_dump_json(exclude=exclude))
    if req.include_usage:
        usage = _usage(prompts, list(last.values()))
        chunk = CompletionStreamResponse(id=request_id, created=created, model=model, choices=[], usage=usage)
        yield event(chunk.model_dump_json())
    yield DONE
