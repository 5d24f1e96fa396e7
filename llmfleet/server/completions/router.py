"""HTTP surface of /v1/completions: parse, hand to serving."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from llmfleet.protocol.openai.completions import CompletionRequest
from llmfleet.server.completions.serving import create_completion
from llmfleet.server.context import ServingContext, serving_context

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, raw: Request,
                      ctx: ServingContext = Depends(serving_context)) -> Response:
    return await create_completion(body, ctx, raw)
