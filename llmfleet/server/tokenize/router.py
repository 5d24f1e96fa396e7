"""HTTP surface of /tokenize and /detokenize; the work runs on the tokenizer pool, off the event loop."""
from __future__ import annotations

from types import SimpleNamespace

from fastapi import APIRouter, Depends

from llmfleet.protocol.openai.tokenize import (DetokenizeRequest, DetokenizeResponse, TokenizeRequest,
                                               TokenizeResponse)
from llmfleet.server.chat.messages import render_options, template_messages
from llmfleet.server.common.prompts import chat_prompt, check_length, utf8
from llmfleet.server.common.sampling import check_unknown
from llmfleet.server.common.text import check_text
from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.errors import APIError

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, ctx: ServingContext = Depends(serving_context)) -> TokenizeResponse:
    check_unknown(body, ctx.config.lenient_requests)
    check_text(body)
    ctx.resolve_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "prompt: give either prompt or messages", "prompt", "invalid_value")
    if body.messages is not None:
        ids = await _chat_ids(body, ctx)
    else:
        check_length(len(body.prompt), ctx.max_prompt_chars, "prompt")
        special = True if body.add_special_tokens is None else body.add_special_tokens
        ids = await ctx.tokenizers.run(lambda tok: tok.encode(utf8(body.prompt, "prompt"), add_special_tokens=special))
    strs = await ctx.tokenizers.run(lambda tok: tok.convert_ids_to_tokens(ids)) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=ctx.max_model_len, tokens=ids, token_strs=strs)


async def _chat_ids(body: TokenizeRequest, ctx: ServingContext) -> list[int]:
    request = SimpleNamespace(messages=body.messages, add_generation_prompt=body.add_generation_prompt,
                              continue_final_message=body.continue_final_message, chat_template=body.chat_template,
                              chat_template_kwargs=body.chat_template_kwargs)
    ids = await chat_prompt(template_messages(request), ctx.tokenizers, ctx.max_prompt_chars, render_options(request))
    if body.add_special_tokens:  # the template placed its own; asked for, the tokenizer's are added around them
        ids = await ctx.tokenizers.run(lambda tok: tok.build_inputs_with_special_tokens(ids))
    return ids


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, ctx: ServingContext = Depends(serving_context)) -> DetokenizeResponse:
    check_unknown(body, ctx.config.lenient_requests)
    ctx.resolve_model(body.model)
    vocab = ctx.engine.limits.vocab_size
    bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise APIError(400, f"tokens: token id {bad} is outside the vocabulary [0, {vocab})", "tokens",
                       "invalid_value")
    return DetokenizeResponse(prompt=await ctx.tokenizers.run(lambda tok: tok.decode(body.tokens)))
