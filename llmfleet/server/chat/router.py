"""HTTP surface of /v1/chat/completions: parse, hand to serving."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from llmfleet.protocol.openai.chat import ChatCompletionRequest
from llmfleet.server.chat.serving import create_chat_completion
from llmfleet.server.context import ServingContext, serving_context

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, raw: Request,
                           ctx: ServingContext = Depends(serving_context)) -> Response:
    return await create_chat_completion(body, ctx, raw)
