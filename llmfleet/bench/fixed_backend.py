"""A fixed-answer OpenAI-compatible backend: the gateway's benchmark and failure tests run against it.

It answers /v1/completions and /v1/chat/completions with the same few tokens (streamed as SSE or not) at once,
so what a benchmark measures through it is the proxy's own cost. `POST /control` changes its behaviour at run
time: {"ready": "draining"} (its /ready answers 503 draining), {"status": 503} (every completion fails with it),
{"break_after": 2} (streams stop after 2 events without [DONE], the connection dropped), {"delay_s": 0.5},
{"logprob": -2.0} (the logprob of every token, in answers that ask for logprobs; default -0.5).

    python -m llmfleet.bench.fixed_backend --port 9001 [--model fixed] [--tokens 4]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def create_app(model: str = "fixed", tokens: int = 4) -> Starlette:
    state = {"ready": "ready", "status": 200, "break_after": None, "delay_s": 0.0, "served": 0, "logprob": -0.5}

    async def complete(request: Request) -> Response:
        body = json.loads(await request.body())
        state["served"] += 1
        if state["delay_s"]:
            await asyncio.sleep(state["delay_s"])
        if body.get("model") not in (None, model):
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                           "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}}, 404)
        if state["status"] != 200:
            code = "draining" if state["status"] == 503 and state["ready"] == "draining" else "fixed_failure"
            return JSONResponse({"error": {"message": "fixed backend failure", "type": "server_error",
                                           "param": None, "code": code}}, state["status"])
        chat = request.url.path.endswith("/chat/completions")
        if body.get("stream"):
            return StreamingResponse(_events(model, tokens, chat, state["break_after"]),
                                     media_type="text/event-stream")
        answer = _answer(model, tokens, chat)
        if body.get("logprobs") is not None and body.get("logprobs") is not False:
            answer["choices"][0]["logprobs"] = _logprobs(tokens, chat, state["logprob"])
        return JSONResponse(answer)

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": state["ready"]}, 200 if state["ready"] == "ready" else 503)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                         "owned_by": "fixed"}]})

    async def control(request: Request) -> JSONResponse:
        state.update(json.loads(await request.body()))
        return JSONResponse(state)

    return Starlette(routes=[
        Route("/v1/completions", complete, methods=["POST"]), Route("/v1/chat/completions", complete,
                                                                     methods=["POST"]),
        Route("/ready", ready), Route("/health", _health), Route("/v1/models", models),
        Route("/control", control, methods=["POST", "GET"])])


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _answer(model: str, tokens: int, chat: bool) -> dict:
    text = " ok" * tokens
    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"} if chat
              else {"index": 0, "text": text, "finish_reason": "length"})
    return {"id": "fixed-0", "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}}


def _logprobs(tokens: int, chat: bool, logprob: float) -> dict:
    if chat:
        return {"content": [{"token": " ok", "logprob": logprob, "bytes": None, "top_logprobs": []}] * tokens}
    return {"tokens": [" ok"] * tokens, "token_logprobs": [logprob] * tokens, "top_logprobs": None,
            "text_offset": list(range(0, 3 * tokens, 3))}


async def _events(model: str, tokens: int, chat: bool, break_after: int | None):
    for i in range(tokens):
        if break_after is not None and i >= break_after:
            raise ConnectionResetError("fixed backend: stream broken on purpose")
        delta = {"index": 0, "delta": {"content": " ok"}} if chat else {"index": 0, "text": " ok"}
        delta["finish_reason"] = "length" if i == tokens - 1 else None
        chunk = {"id": "fixed-0", "object": "chat.completion.chunk" if chat else "text_completion",
                 "created": 0, "model": model, "choices": [delta]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="a fixed-answer OpenAI-compatible backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--model", default="fixed")
    parser.add_argument("--tokens", type=int, default=4)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model, args.tokens), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
