"""HTTP surface of /v1/embeddings: parse, hand to serving."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from llmfleet.protocol.openai.embeddings import EmbeddingRequest
from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.embeddings.serving import create_embedding

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, raw: Request,
                     ctx: ServingContext = Depends(serving_context)) -> Response:
    return await create_embedding(body, ctx, raw)
