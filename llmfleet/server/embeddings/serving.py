"""The logic of /v1/embeddings: tokenize every input, run one pooling request per input, answer in OpenAI's shape.

Each input is checked against the engine's limits before anything is sent (a bad one is a 400 naming `input`, and
nothing runs). Every input counts against the waiting bound until the answer is built. The engine batches the
requests under its token budget like any others; a client that leaves aborts those still running.
"""
from __future__ import annotations

import asyncio
import base64
import struct
import uuid

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.openai.embeddings import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.server.common.generation import engine_dead, until_disconnected
from llmfleet.server.common.prompts import check_length, utf8
from llmfleet.server.common.sampling import check_unknown
from llmfleet.server.common.text import check_text
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError


async def create_embedding(req: EmbeddingRequest, ctx: ServingContext, raw: Request) -> Response:
    """Answer one /v1/embeddings request. Raises APIError for bad requests."""
    check_unknown(req, ctx.config.lenient_requests)
    check_text(req)
    model = ctx.resolve_model(req.model)
    if "embed" not in ctx.engine.tasks:
        raise APIError(400, f"model: `{model}` does not serve embeddings", "model", "model_not_supported")
    if req.dimensions is not None and req.dimensions != ctx.engine.embedding_size:
        raise APIError(400, f"dimensions: this model's embeddings have {ctx.engine.embedding_size} dimensions and "
                            f"cannot be shortened; leave dimensions out or set it to {ctx.engine.embedding_size}",
                       "dimensions", "unsupported")
    prompts = await _input_ids(req.input, ctx)
    ctx.admit(len(prompts), "input")
    try:
        vectors = await until_disconnected(raw, _embed_all(ctx, prompts, PoolingParams(req.normalize),
                                                           f"embd-{uuid.uuid4().hex}", req.priority))
    except EngineDeadError as exc:
        raise engine_dead(exc) from None
    finally:
        ctx.release(len(prompts))
    if vectors is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    data = [EmbeddingData(embedding=_encode(v, req.encoding_format), index=i) for i, v in enumerate(vectors)]
    tokens = sum(map(len, prompts))
    body = EmbeddingResponse(data=data, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
    return JSONResponse(body.model_dump(mode="json"))


async def _input_ids(value, ctx: ServingContext) -> list[list[int]]:
    """`input` as OpenAI allows it to one id list per item, each within the engine's limits (else a 400)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(t, int) for t in value)):
        items: list = [value]
    else:
        items = list(value)
    if not items:
        raise APIError(400, "input: must not be empty", "input", "invalid_value")
    if len(items) > ctx.config.max_waiting_requests:
        raise APIError(400, f"input: has {len(items)} items; this server takes at most "
                            f"{ctx.config.max_waiting_requests} per request", "input", "invalid_value")
    for item in items:
        if isinstance(item, str):
            check_length(len(item), ctx.max_prompt_chars, "input")
    ids = await ctx.tokenizers.run(_encode_all, items)
    for item in ids:
        try:
            ctx.engine.limits.check_token_ids(item)
            ctx.engine.limits.check_pooling_prompt(len(item), ctx.engine.config.max_num_batched_tokens)
        except ValueError as exc:
            message = str(exc).replace("prompt: ", "input: ", 1)
            raise APIError(400, message, "input", "invalid_value") from None
    return ids


def _encode_all(tokenizer, items: list) -> list[list[int]]:
    return [tokenizer.encode(utf8(p, "input")) if isinstance(p, str) else list(p) for p in items]


async def _embed_all(ctx: ServingContext, prompts: list[list[int]], params: PoolingParams, base_id: str,
                     priority: int) -> list[list[float]]:
    """Every prompt's vector, in order; on any failure (or cancellation) the others are aborted."""
    tasks = [asyncio.create_task(ctx.engine.embed(p, params, f"{base_id}-{i}", priority))
             for i, p in enumerate(prompts)]
    try:
        outputs = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    if any(o.finish_reason != "stop" for o in outputs):
        raise APIError(503, "the engine dropped an embedding request; retry", None, "aborted")
    return [o.outputs.data for o in outputs]


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
