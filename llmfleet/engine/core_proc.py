"""The engine-core process: EngineCore's step loop, fed and read over ZeroMQ with msgspec messages.

The API server binds two IPC sockets and spawns this process (never forks: CUDA and threads do not survive a
fork). A thread here receives and decodes client messages into a queue; the main thread applies them between steps,
steps while there is work, and sends each step's outputs as one message. With nothing to do it blocks on the queue.

The process lives only as long as its parent: a pipe from the parent reaches EOF when the parent exits, however it
exits (kill -9 included), and the core then exits at once. SIGINT and SIGTERM are ignored: the API server decides
when the core stops (after draining), by a `shutdown` call. A failure sends `Dead` with the cause, then exits 1.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback

import msgspec
import zmq

from llmfleet.engine.request import Status
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import (AbortRequests, AddRequests, Call, CallResult, ClientMessage, Dead,
                                               Ready, SeqOutput, StepOutputs, StopStrings)
from llmfleet.worker.executor.worker_proc import exit_with_parent

logger = logging.getLogger("llmfleet.engine.core_proc")
_STALL_WAIT_S = 0.002  # a step that could schedule nothing waits this long (or for a message) before the next


def run_engine_core(config: EngineConfig, input_address: str, output_address: str, parent_alive,
                    log_level: str = "INFO") -> None:
    """The process's entry point (multiprocessing target): build the core, then serve until shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s engine-core: %(message)s")
    threading.Thread(target=exit_with_parent, args=(parent_alive,), daemon=True, name="parent-watch").start()
    context = zmq.Context()   # the output socket's alone: terminating it flushes what is still queued
    output = context.socket(zmq.PUSH)
    output.connect(output_address)
    encoder = msgspec.msgpack.Encoder()
    try:
        from llmfleet.engine.core import EngineCore

        core = EngineCore(config)
    except BaseException as exc:  # noqa: BLE001 - the API server must learn why, then we are done
        logger.exception("the engine core failed to start")
        output.send(encoder.encode(Dead(f"the engine failed to start: {type(exc).__name__}: {exc}")))
        _flush(output, context)
        os._exit(1)
    limits = core.limits
    output.send(encoder.encode(Ready(core.model_name, limits.max_model_len, limits.vocab_size,
                                     limits.num_kv_blocks, limits.block_size, sorted(core.eos_token_ids),
                                     core.tasks, core.runner.info.hidden_size)))
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(input_address, inbox), daemon=True, name="core-input").start()
    code = _CoreLoop(core, inbox, output, encoder).run()
    _flush(output, context)
    os._exit(code)


def _flush(output: zmq.Socket, context: zmq.Context) -> None:
    """Blocks (up to 5 s) until the queued messages, a Dead with its cause above all, are out: os._exit would drop
    them."""
    output.close(linger=5000)
    context.term()


def _receive(address: str, inbox: queue.SimpleQueue) -> None:
    """Input thread (with a context of its own): decoding happens here, so the main thread only applies messages."""
    sock = zmq.Context().socket(zmq.PULL)
    sock.connect(address)
    decoder = msgspec.msgpack.Decoder(ClientMessage)
    while True:
        frame = sock.recv(copy=False)
        try:
            inbox.put(decoder.decode(frame.buffer))
        except msgspec.DecodeError as exc:
            inbox.put(exc)


class _CoreLoop:
    def __init__(self, core, inbox: queue.SimpleQueue, output: zmq.Socket, encoder: msgspec.msgpack.Encoder):
        self.core, self.inbox, self.output, self.encoder = core, inbox, output, encoder
        self.stopping = False

    def run(self) -> int:
        """Serves until a shutdown call (0) or a failure (1, after sending Dead)."""
        try:
            while not self.stopping:
                self._apply(None if self._busy() else self.inbox.get())
                if self.stopping:
                    break
                if self._busy():
                    started = time.monotonic()
                    outputs = self.core.step()
                    if outputs:
                        self._send(StepOutputs(outputs, started, time.monotonic()))
                    elif self.core.stalled:   # grammars compiling: wait a little for them or a message
                        self._apply(self._wait(_STALL_WAIT_S))
            return 0
        except BaseException as exc:  # noqa: BLE001 - the engine is dead; the API server fails every request
            logger.error("engine core failed:\n%s", traceback.format_exc())
            self._send(Dead(f"the engine failed: {type(exc).__name__}: {exc}"))
            return 1

    def _wait(self, timeout: float):
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _busy(self) -> bool:
        return self.core.has_unfinished_requests() or self.core.has_inflight_step()

    def _apply(self, first) -> None:
        """Applies `first` (when given) and every message already queued."""
        message = first
        while True:
            if message is not None:
                self._handle(message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message) -> None:
        core = self.core
        if isinstance(message, AddRequests):
            for request in message.requests:
                try:
                    core.add_request(request)
                except ValueError as exc:  # the client checks first, so this is a client bug: say so, go on
                    logger.error("rejected request %s: %s", request.request_id, exc)
                    now = time.monotonic()
                    self._send(StepOutputs([SeqOutput(request.request_id, [], "abort")], now, now))
        elif isinstance(message, AbortRequests):
            core.abort_requests(message.request_ids)
        elif isinstance(message, StopStrings):
            core.abort_requests(message.request_ids, Status.FINISHED_STOPPED)
        elif isinstance(message, Call):
            self._send(self._call(message))
        else:
            raise RuntimeError(f"undecodable message from the API server: {message}")

    def _call(self, call: Call) -> CallResult:
        if call.name == "stats":
            return CallResult(call.call_id, stats=self.core.stats())
        if call.name == "reset_prefix_cache":
            return CallResult(call.call_id, value=self.core.reset_prefix_cache())
        if call.name == "shutdown":
            self.stopping = True
        return CallResult(call.call_id, value=0)

    def _send(self, message) -> None:
        self.output.send(self.encoder.encode(message), copy=False)
