"""Running a request's prompts on the engine client: admit, submit, merge their streams, collect, stop on disconnect.

A request with several prompts (completions accept a list) becomes one engine request per prompt, each with n
samples. Every sequence (prompts x n) counts against the waiting bound until it has its first token. A Submission
closes every stream on every exit path (finish, error, cancellation, a client that left), and closing an
unfinished stream aborts it in the engine, so its KV blocks return to the pool.
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


class Submission:
    """The engine streams of one HTTP request, and its sequences still counted as waiting by the context."""

    def __init__(self, ctx: ServingContext, streams: list[RequestStream], samples: list[int]):
        self.ctx, self.streams = ctx, streams
        self._waiting = list(samples)  # per stream: sequences without a token yet

    def observe(self, index: int, output: RequestOutput) -> None:
        """Sequences of stream `index` that got a token (or ended) stop counting as waiting."""
        started = sum(1 for c in output.outputs if c.token_ids or c.finish_reason is not None)
        waiting = 0 if output.finished else max(0, self._waiting[index] - started)
        self._release(index, waiting)

    def close(self) -> None:
        """Stop reading every stream (aborting the unfinished ones) and release what still counted. Idempotent."""
        for index, stream in enumerate(self.streams):
            stream.close()
            self._release(index, 0)

    def _release(self, index: int, waiting: int) -> None:
        if waiting < self._waiting[index]:
            self.ctx.release(self._waiting[index] - waiting)
            self._waiting[index] = waiting


async def submit(ctx: ServingContext, prompts: list[list[int]], params: list[SamplingParams], base_id: str,
                 priority: int, prompt_param: str, model: str | None = None) -> Submission:
    """Admit every sequence, then add one engine request per prompt, all at once (under the LoRA adapter that
    `model` names, if it names one). All or none: on an error the ones already added are aborted."""
    if "generate" not in ctx.engine.tasks:
        raise APIError(400, f"model: `{ctx.model_names[0]}` is an embedding model (encoder-only): it serves "
                            f"/v1/embeddings, not text generation", "model", "model_not_supported")
    samples = [p.num_samples for p in params]
    ctx.admit(sum(samples), "n" if len(prompts) == 1 else prompt_param)
    lora = ctx.lora_for(model)
    adds = [ctx.engine.add_request(prompt, sampling, f"{base_id}-{i}", priority, lora_request=lora)
            for i, (prompt, sampling) in enumerate(zip(prompts, params))]
    try:
        results = await asyncio.gather(*adds, return_exceptions=True)
    except BaseException:  # cancelled: each add the engine took aborts itself
        ctx.release(sum(samples))
        raise
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return Submission(ctx, results, samples)
    for stream in results:
        if isinstance(stream, RequestStream):
            stream.close()
    ctx.release(sum(samples))
    raise _as_api_error(failure, prompt_param)


def _as_api_error(exc: BaseException, prompt_param: str) -> BaseException:
    if isinstance(exc, ValueError):
        error = APIError.from_value_error(exc)
        error.param = prompt_param if error.param == "prompt" else error.param  # chat: the prompt is messages
        return error
    if isinstance(exc, EngineDeadError):
        return engine_dead(exc)
    return exc


async def merge(sub: Submission) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, cumulative output) from all streams as they come. RequestAbortedError ends a stream with
    its outputs marked "abort"; EngineDeadError propagates. Leaving early closes (aborts) every stream."""
    try:
        if len(sub.streams) == 1:
            async for output in _until_aborted(sub, 0):
                yield 0, output
            return
        async for item in _merged(sub):
            yield item
    finally:
        sub.close()


async def _merged(sub: Submission) -> AsyncIterator[tuple[int, RequestOutput]]:
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for output in _until_aborted(sub, index):
                queue.put_nowait((index, output))
        except EngineDeadError as exc:
            queue.put_nowait((index, exc))
        queue.put_nowait((index, None))

    tasks = [asyncio.create_task(pump(i)) for i in range(len(sub.streams))]
    try:
        remaining = len(tasks)
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


async def collect(sub: Submission) -> list[RequestOutput]:
    """The final output of every stream (aborted ones marked "abort")."""
    last: list[RequestOutput | None] = [None] * len(sub.streams)
    async for index, output in merge(sub):
        last[index] = output
    return [out if out is not None else _empty(s.request_id) for out, s in zip(last, sub.streams)]


async def collect_for(request: Request, sub: Submission) -> list[RequestOutput] | None:
    """The final outputs of a non-streaming request; None when its client left first. A dead engine is a 503."""
    try:
        return await until_disconnected(request, collect(sub))
    except EngineDeadError as exc:
        raise engine_dead(exc) from None
    finally:
        sub.close()


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


async def _until_aborted(sub: Submission, index: int) -> AsyncIterator[RequestOutput]:
    stream, last = sub.streams[index], None
    try:
        async for output in stream:
            sub.observe(index, output)
            last = output
            yield output
    except RequestAbortedError:
        yield _mark_aborted(last, stream.request_id)


def _mark_aborted(output: RequestOutput | None, request_id: str) -> RequestOutput:
    if output is None:
        return _empty(request_id)
    choices = [CompletionOutput(c.index, c.text, list(c.token_ids), c.finish_reason or "abort", c.stop_reason,
                                c.logprobs) for c in output.outputs]
    return RequestOutput(output.request_id, output.prompt, output.prompt_token_ids, choices, True,
                         output.num_cached_tokens)


def _empty(request_id: str) -> RequestOutput:
    return RequestOutput(request_id, None, [], [], True)
