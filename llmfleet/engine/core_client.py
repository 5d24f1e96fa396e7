"""EngineCoreClient: the API server's side of the engine-core process, with an asyncio face.

`start(config)` spawns the core process, loads the tokenizer meanwhile, and returns once the core reports Ready.
`add_request` checks the prompt against the core's limits (a bad one raises ValueError naming the field before
anything is sent), registers its samples with the OutputProcessor and sends them; a task reads the core's step
messages, turns token deltas into RequestOutputs (detokenization and stop strings happen here) and hands each to
its RequestStream. Everything runs on the one event loop that started the client.

If the core process dies, every in-flight request fails with EngineDeadError (nobody hangs), later submissions fail
at once, and `on_dead` (the server uses it to exit non-zero) is called with the cause.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
import zmq
import zmq.asyncio

from llmfleet.engine.core_proc import run_engine_core
from llmfleet.engine.limits import Limits
from llmfleet.engine.output_processor import OutputProcessor, tokenize_prompt
from llmfleet.engine.streams import EngineDeadError, RequestAbortedError, RequestObserver, RequestStream
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import (AbortRequests, AddRequests, Call, CallName, CallResult, CoreMessage,
                                               Dead, EngineStats, Ready, StepOutputs, StopStrings)
from llmfleet.protocol.lora import check_lora_request
from llmfleet.protocol.outputs import PoolingRequestOutput, RequestOutput
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class EngineCoreClient:
    """Talks to one engine-core process. Build with `await EngineCoreClient.start(config)`."""

    def __init__(self, config: EngineConfig, observer: RequestObserver | None):
        self.config = config
        self.observer = observer        # may be attached after start(); called on the event loop
        self.error: EngineDeadError | None = None     # why the engine is dead; None while it runs
        self.on_dead: Callable[[EngineDeadError], None] | None = None
        self.tokenizer = None
        self.model_name, self.max_model_len = "", 0
        self.tasks: tuple[str, ...] = ()              # "generate" and/or "embed", as the core reports
        self.embedding_size = 0                       # length of a pooled vector
        self.limits: Limits | None = None
        self.processor: OutputProcessor | None = None
        self._streams: dict[str, RequestStream] = {}
        self._unstarted: dict[str, int] = {}          # request id -> its samples, until the first token arrives
        self._calls: dict[int, asyncio.Future] = {}
        self._call_ids = itertools.count()
        self.loop = asyncio.get_running_loop()   # the one event loop this client lives on
        self._context = zmq.asyncio.Context()
        base = os.path.join(tempfile.gettempdir(), f"llmfleet-{uuid.uuid4().hex[:12]}")
        self._addresses = (f"ipc://{base}-in", f"ipc://{base}-out")
        self._input = self._context.socket(zmq.PUSH)
        self._input.setsockopt(zmq.SNDHWM, 0)
        self._input.setsockopt(zmq.LINGER, 0)
        self._input.bind(self._addresses[0])
        self._output = self._context.socket(zmq.PULL)
        self._output.setsockopt(zmq.RCVHWM, 0)
        self._output.bind(self._addresses[1])
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(CoreMessage)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._parent_alive = None
        self._reader: asyncio.Task | None = None
        self._closed = False

    # ---- life -------------------------------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: EngineConfig, observer: RequestObserver | None = None,
                    log_level: str = "INFO") -> "EngineCoreClient":
        """Spawn the core and wait until it is ready; raises EngineDeadError with the cause if it fails to start."""
        self = cls(config, observer)
        spawn = multiprocessing.get_context("spawn")
        keep, give = spawn.Pipe(duplex=False)   # the core exits when `give`'s peer (kept here) closes
        self._parent_alive = give
        self._process = spawn.Process(target=run_engine_core, name="llmfleet-engine-core", daemon=True,
                                      args=(config, *self._addresses, keep, log_level))
        self._process.start()
        keep.close()
        tokenizer = asyncio.create_task(asyncio.to_thread(_load_tokenizer, config))
        try:
            ready = await self._wait_ready()
            self.tokenizer = await tokenizer
        except BaseException:
            tokenizer.cancel()
            await self.shutdown()
            raise
        self.model_name, self.max_model_len = ready.model_name, ready.max_model_len
        self.tasks = tuple(ready.tasks)
        self.embedding_size = ready.embedding_size
        self.limits = Limits(ready.max_model_len, ready.vocab_size, ready.num_kv_blocks, ready.block_size)
        self.processor = OutputProcessor(self.tokenizer, config.enable_prefix_caching)
        self.loop.add_reader(self._process.sentinel, self._process_exited)
        self._reader = asyncio.create_task(self._read_outputs())
        return self

    async def _wait_ready(self) -> Ready:
        receive = asyncio.ensure_future(self._output.recv())
        while not receive.done():
            await asyncio.wait({receive}, timeout=0.2)
            if not receive.done() and not self._process.is_alive():
                # Its last words (Dead, with the cause) may still be on their way: the socket lingers for them.
                await asyncio.wait({receive}, timeout=2.0)
                if not receive.done():
                    receive.cancel()
                    raise EngineDeadError(f"the engine core exited during start-up "
                                          f"(exit code {self._process.exitcode})")
        message = self._decoder.decode(receive.result())
        if isinstance(message, Dead):
            raise EngineDeadError(message.error)
        if not isinstance(message, Ready):
            raise EngineDeadError(f"the engine core sent {type(message).__name__} before Ready")
        return message

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the core (it finishes its current step), fail what is in flight. Idempotent."""
        if not self._closed and self._process is not None and self._process.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._send(Call(next(self._call_ids), "shutdown"))
        self._fail_all(self.error or EngineDeadError("the engine is shut down"), notify=False)
        if self._process is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self._process.sentinel)
            await asyncio.to_thread(self._process.join, timeout)
            if self._process.is_alive():
                logger.warning("the engine core did not stop in %.0f s; killing it", timeout)
                self._process.kill()
                await asyncio.to_thread(self._process.join, 5)
        if self._reader is not None:
            self._reader.cancel()
        if self._parent_alive is not None:
            self._parent_alive.close()
        self._context.destroy(linger=0)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # ---- requests ---------------------------------------------------------------------------------------------
    async def add_request(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
                          priority: int = 0, lora_request=None) -> RequestStream:
        """Submit a request (under `lora_request`'s adapter, already checked by the caller); returns its stream.
        Raises ValueError naming the field, or EngineDeadError."""
        if self._closed:
            raise self.error or EngineDeadError("the engine is shut down")
        if not isinstance(params, SamplingParams):
            raise ValueError("sampling_params: must be a SamplingParams")
        request_id = request_id or uuid.uuid4().hex
        text, ids = tokenize_prompt(prompt, self.tokenizer)
        self.limits.check_token_ids(ids)
        self.limits.max_total_tokens(len(ids), params)
        arrival = time.monotonic()
        lora = check_lora_request(lora_request, self.config, read=False)
        return self._submit(request_id, self.processor.add(request_id, text, ids, params, arrival, priority, lora),
                            arrival)

    async def add_pooling_request(self, prompt: str | list[int], params: PoolingParams | None = None,
                                  request_id: str | None = None, priority: int = 0) -> RequestStream:
        """Submit a pooling (embedding) request; its stream yields one PoolingRequestOutput. Raises ValueError
        naming the field, or EngineDeadError."""
        if self._closed:
            raise self.error or EngineDeadError("the engine is shut down")
        request_id = request_id or uuid.uuid4().hex
        text, ids = tokenize_prompt(prompt, self.tokenizer)
        self.limits.check_token_ids(ids)
        self.limits.check_pooling_prompt(len(ids), self.config.max_num_batched_tokens)
        arrival = time.monotonic()
        request = self.processor.add_pooling(request_id, ids, params or PoolingParams(), arrival, priority)
        return self._submit(request_id, [request], arrival)

    def _submit(self, request_id: str, requests: list, arrival: float) -> RequestStream:
        stream = RequestStream(request_id, self.loop, self.abort)
        self._streams[request_id] = stream
        self._unstarted[request_id] = len(requests)
        self._send(AddRequests(requests))
        self._notify("on_added", request_id, arrival)
        return stream

    async def embed(self, prompt: str | list[int], params: PoolingParams | None = None,
                    request_id: str | None = None, priority: int = 0) -> PoolingRequestOutput:
        """The pooled vector of one prompt. Cancelling the caller aborts the request."""
        stream = await self.add_pooling_request(prompt, params, request_id, priority)
        try:
            return await anext(stream)
        finally:
            stream.close()

    async def generate(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
                       priority: int = 0, lora_request=None) -> AsyncIterator[RequestOutput]:
        """Yield the request's cumulative outputs until it finishes. Closing or cancelling the consumer aborts it."""
        stream = await self.add_request(prompt, params, request_id, priority, lora_request)
        try:
            async for output in stream:
                yield output
        finally:
            stream.close()

    def abort(self, request_ids: str | list[str]) -> None:
        """Abort requests; unknown or finished ids are ignored. Consumers still reading get RequestAbortedError."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        core_ids, now = [], time.monotonic()
        for request_id in ids:
            stream = self._streams.pop(request_id, None)
            if stream is None:
                continue
            self._unstarted.pop(request_id, None)
            core_ids += self.processor.abort(request_id)
            self._notify("on_aborted", request_id, now)
            RequestStream.deliver([(stream, RequestAbortedError(f"request {request_id} was aborted"))])
        if core_ids and not self._closed:
            self._send(AbortRequests(core_ids))

    def abort_all(self) -> None:
        self.abort(list(self._streams))

    async def stats(self) -> EngineStats:
        return (await self._call("stats")).stats

    async def reset_prefix_cache(self) -> int:
        return (await self._call("reset_prefix_cache")).value

    @property
    def num_in_flight(self) -> int:
        """Requests submitted and not finished."""
        return len(self._streams)

    @property
    def num_waiting(self) -> int:
        """Sequences (samples) submitted that have no output token yet."""
        return sum(self._unstarted.values())

    # ---- the core's messages ----------------------------------------------------------------------------------
    async def _read_outputs(self) -> None:
        while True:
            frame = await self._output.recv(copy=False)
            message = self._decoder.decode(frame.buffer)
            if isinstance(message, StepOutputs):
                self._on_step(message)
            elif isinstance(message, CallResult):
                future = self._calls.pop(message.call_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif isinstance(message, Dead):
                self._die(EngineDeadError(message.error))

    def _on_step(self, message: StepOutputs) -> None:
        now = time.monotonic()
        outputs, stopped = self.processor.process(message.outputs, now)
        if stopped:
            self._send(StopStrings(stopped))
        items = []
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is None:
                continue
            if output.finished:
                del self._streams[output.request_id]
            if output.finished or any(c.token_ids for c in output.outputs):
                self._unstarted.pop(output.request_id, None)
            self._notify("on_output", output, message.step_start, now)
            items.append((stream, output))
        RequestStream.deliver(items)

    async def _call(self, name: CallName) -> CallResult:
        if self._closed:
            raise self.error or EngineDeadError("the engine is shut down")
        call_id = next(self._call_ids)
        future = self.loop.create_future()
        self._calls[call_id] = future
        self._send(Call(call_id, name))
        return await future

    def _send(self, message) -> None:
        self._input.send(self._encoder.encode(message), copy=False)

    def _process_exited(self) -> None:
        self.loop.remove_reader(self._process.sentinel)
        self._process.join(1.0)  # it has exited (its sentinel is readable): this only reaps it
        code = self._process.exitcode
        if not self._closed:
            # A Dead message sent just before exiting may still be queued: give the reader one turn to see it.
            self.loop.call_later(0.05, self._die, EngineDeadError(_exit_cause(code)))

    def _die(self, error: EngineDeadError) -> None:
        if self._closed:
            return
        logger.error("engine core failed: %s", error)
        self.error = error
        self._fail_all(error, notify=True)

    def _fail_all(self, error: EngineDeadError, notify: bool) -> None:
        self._closed = True
        streams, self._streams = list(self._streams.values()), {}
        self._unstarted.clear()
        RequestStream.deliver([(stream, error) for stream in streams])
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        if notify and self.on_dead is not None:
            self.on_dead(error)

    def _notify(self, method: str, *args) -> None:
        try:
            if self.observer is not None:
                getattr(self.observer, method)(*args)
        except Exception:  # noqa: BLE001 - metrics must never take serving down
            logger.exception("request observer %s failed", method)


def _exit_cause(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the engine core process was killed by signal {-code}"
    return f"the engine core process exited unexpectedly (exit code {code})"


def _load_tokenizer(config: EngineConfig):
    from llmfleet.model.source import resolve_model

    return resolve_model(config.model, config.tokenizer, config.load_format, config.skip_tokenizer_init).tokenizer
