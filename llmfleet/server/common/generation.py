"""Running a request's prompts on the engine client: submit, merge their streams, collect, stop on disconnect.

A request with several prompts (completions accept a list) becomes one engine request per prompt. Every stream is
closed on every exit path (finish, error, cancellation), and closing an unfinished stream aborts it in the engine,
so its KV blocks return to the pool.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request

from llmfleet.engine.streams import EngineDeadError, RequestAbortedError, RequestStream
from llmfleet.protocol.outputs import CompletionOutput, RequestOutput
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError

T = TypeVar("T")


def engine_dead(exc: EngineDeadError) -> APIError:
    return APIError(503, str(exc), None, "engine_dead")


async def submit(ctx: ServingContext, prompts: list[list[int]], params: list[SamplingParams], base_id: str,
                 priority: int, prompt_param: str) -> list[RequestStream]:
    """Add one engine request per prompt; all or none: on an error the ones already added are aborted."""
    streams: list[RequestStream] = []
    try:
        for i, (prompt, sampling) in enumerate(zip(prompts, params)):
            streams.append(await ctx.engine.add_request(prompt, sampling, f"{base_id}-{i}", priority))
    except BaseException as exc:
        for stream in streams:
            stream.close()
        if isinstance(exc, ValueError):
            error = APIError.from_value_error(exc)
            error.param = prompt_param if error.param == "prompt" else error.param  # chat: the prompt is messages
            raise error from None
        if isinstance(exc, EngineDeadError):
            raise engine_dead(exc) from None
        raise
    return streams


async def merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, cumulative output) from all streams as they come. RequestAbortedError ends a stream with
    its outputs marked "abort"; EngineDeadError propagates. Leaving early closes (aborts) every stream."""
    if len(streams) == 1:
        async with _closing(streams):
            async for output in _until_aborted(streams[0]):
                yield 0, output
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for output in _until_aborted(stream):
                queue.put_nowait((index, output))
        except EngineDeadError as exc:
            queue.put_nowait((index, exc))
        queue.put_nowait((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        async with _closing(streams):
            remaining = len(streams)
            while remaining:
                index, item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield index, item
    finally:
        for task in tasks:
            task.cancel()


async def collect(streams: list[RequestStream]) -> list[RequestOutput]:
    """The final output of every stream (aborted ones marked "abort")."""
    last: list[RequestOutput | None] = [None] * len(streams)
    async for index, output in merge(streams):
        last[index] = output
    return [out if out is not None else _empty(s.request_id) for out, s in zip(last, streams)]


async def collect_for(request: Request, streams: list[RequestStream]) -> list[RequestOutput] | None:
    """The final outputs of a non-streaming request; None when its client left first. A dead engine is a 503."""
    try:
        return await until_disconnected(request, collect(streams))
    except EngineDeadError as exc:
        raise engine_dead(exc) from None


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, cancelling it if the client disconnects first (then None: nobody will read the answer)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
    return task.result()


async def _wait_disconnect(request: Request) -> None:
    # The body is already read, so the next message is the disconnect (or a 100-continue artefact: skip it).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _until_aborted(stream: RequestStream) -> AsyncIterator[RequestOutput]:
    last: RequestOutput | None = None
    try:
        async for output in stream:
            last = output
            yield output
    except RequestAbortedError:
        yield _mark_aborted(last, stream.request_id)


@contextlib.asynccontextmanager
async def _closing(streams: list[RequestStream]):
    try:
        yield
    finally:
        for stream in streams:
            stream.close()


def _mark_aborted(output: RequestOutput | None, request_id: str) -> RequestOutput:
    if output is None:
        return _empty(request_id)
    choices = [CompletionOutput(c.index, c.text, list(c.token_ids), c.finish_reason or "abort", c.stop_reason,
                                c.logprobs) for c in output.outputs]
    return RequestOutput(output.request_id, output.prompt, output.prompt_token_ids, choices, True,
                         output.num_cached_tokens)


def _empty(request_id: str) -> RequestOutput:
    return RequestOutput(request_id, None, [], [], True)
