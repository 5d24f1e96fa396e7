"""MultiprocExecutor: the model runner's face to the engine core, backed by one worker process per rank.

The engine core calls it as it calls a ModelRunner (`launch(out, prev)` then `collect(step)`, `num_blocks`,
`info`, ...). Each call becomes a message sent to every worker over its own ZeroMQ socket, in the same order, so the
ranks run the same steps; rank 0 answers collects. `launch` returns at once: the workers queue the step on their
devices while the core schedules the next one, as with the in-process runner.

Worker health: while the driver waits for a worker (start-up, a step's result) it watches every worker process.
A rank that dies (any exit) or reports a failure raises WorkerDiedError naming the rank and its exit code or cause;
the engine core then fails its requests and stops, and `shutdown` ends the surviving ranks (which may be blocked in
a collective waiting for the dead one).
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import multiprocessing
import shutil
import tempfile
import time
import uuid

import zmq

from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.worker.executor.messages import (Collect, Launch, SetEos, Shutdown, StepDone, WorkerFailed,
                                               WorkerReady, decode_worker_message, encode)
from llmfleet.worker.executor.worker_proc import WorkerSpec, run_worker
from llmfleet.worker.runner import StepResult

logger = logging.getLogger(__name__)
_POLL_MS = 100   # how often a waiting driver looks at its workers' liveness
_WITNESS_WAIT_S = 1.0
# what the workers' fork server imports once: the runner, the model code and HF configs (a worker unpickles one)
_PRELOAD = ["llmfleet.worker.executor.worker_proc", "llmfleet.worker.runner", "llmfleet.model.loader",
            "transformers", "transformers.models.auto.configuration_auto"]


class WorkerDiedError(RuntimeError):
    """A worker process died or failed: the engine cannot go on."""


@dataclasses.dataclass(frozen=True, slots=True)
class GraphSizes:
    """The sizes a worker captured CUDA graphs for (what the runner's `graphs` / `piecewise` report)."""
    sizes: list[int]


@dataclasses.dataclass(slots=True)
class RemoteStep:
    """A step launched on the workers (the engine core's handle for `collect`)."""
    step_id: int
    timing: list | None = None   # [prepare_s, start mark, end mark] when step timings are recorded


class WallMark:
    """A host-side stand-in for a CUDA event in `step_timings`: the time from launch to the result's arrival."""

    def __init__(self):
        self.t = time.perf_counter()

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "WallMark") -> float:
        return (end.t - self.t) * 1e3


class MultiprocExecutor:
    """Spawns `tensor_parallel_size` workers for `config` and drives them; blocks until all are built."""

    def __init__(self, config: EngineConfig, device: str, dtype, model_path: str, hf_config=None):
        self.config, self.device, self.dtype = config, device, dtype
        self.world_size = config.tensor_parallel_size
        self.step_timings: list | None = None
        self._eos: frozenset[int] = frozenset()
        self._num_launched = 0
        self._context = zmq.Context()
        self._dir = tempfile.mkdtemp(prefix=f"llmfleet-tp-{uuid.uuid4().hex[:8]}-")
        self._results = self._context.socket(zmq.PULL)
        self._results.bind(f"ipc://{self._dir}/results")
        self._steps: list[zmq.Socket] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self._lifelines = []
        self._closed = False
        self._failure: WorkerDiedError | None = None
        # Before multiprocessing's own exit hook, which would wait forever for workers that ignore SIGTERM
        atexit.register(self.shutdown)
        try:
            self._spawn(model_path, hf_config)
            self._take_ready(self._wait_all_ready())
        except BaseException:
            self.shutdown()
            raise

    # ---- life -------------------------------------------------------------------------------------------------
    def _spawn(self, model_path: str, hf_config) -> None:
        spawn = _worker_context(self.device.startswith("cuda"))
        dtype = str(self.dtype).removeprefix("torch.")
        for rank in range(self.world_size):
            sock = self._context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"ipc://{self._dir}/steps-{rank}")
            self._steps.append(sock)
            spec = WorkerSpec(self.config, rank, self.world_size, rank_device(self.device, rank), dtype,
                              model_path, hf_config, f"file://{self._dir}/store", f"ipc://{self._dir}/steps-{rank}",
                              f"ipc://{self._dir}/results", logging.getLevelName(logging.getLogger().level))
            keep, give = spawn.Pipe(duplex=False)   # the worker exits when `give` (kept here) closes
            proc = spawn.Process(target=run_worker, args=(spec, keep), name=f"llmfleet-worker-{rank}", daemon=True)
            with _children_allowed():
                proc.start()
            keep.close()
            self.procs.append(proc)
            self._lifelines.append(give)

    def _wait_all_ready(self) -> list[WorkerReady]:
        ready: dict[int, WorkerReady] = {}
        while len(ready) < self.world_size:
            message = self._receive()
            if not isinstance(message, WorkerReady):
                raise WorkerDiedError(f"worker sent {type(message).__name__} before it was ready")
            ready[message.rank] = message
        return [ready[r] for r in range(self.world_size)]

    def _take_ready(self, ready: list[WorkerReady]) -> None:
        from llmfleet.model.loader import ModelInfo

        first = ready[0]
        # Ranks size their KV caches alone (their free memory may differ a little): the scheduler hands out only
        # the block ids every rank holds.
        self.num_blocks = min(r.num_blocks for r in ready)
        self.max_model_len, self.is_encoder = first.max_model_len, first.is_encoder
        self.info = ModelInfo(**first.info)
        self.weight_bytes = sum(r.weight_bytes for r in ready)
        self.graphs = GraphSizes(first.decode_graph_sizes) if first.decode_graph_sizes else None
        self.piecewise = GraphSizes(first.piecewise_sizes) if first.piecewise_sizes else None
        logger.info("%d workers ready: %d KV blocks each", self.world_size, self.num_blocks)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stops every worker (asking first, then killing what is left) and frees the sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        for sock, proc in zip(self._steps, self.procs):
            if proc.is_alive():
                with contextlib.suppress(zmq.Again):   # a worker that never connected: it is killed below
                    sock.send(encode(Shutdown()), flags=zmq.NOBLOCK)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout)
        for lifeline in self._lifelines:
            lifeline.close()
        for sock in self._steps + [self._results]:
            sock.close(linger=0)
        self._context.term()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- the runner's interface ---------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @eos_token_ids.setter
    def eos_token_ids(self, token_ids) -> None:
        self._eos = frozenset(token_ids)
        self._broadcast(encode(SetEos(sorted(self._eos))))

    def launch(self, out: SchedulerOutput, prev: RemoteStep | None = None) -> RemoteStep:
        """Sends the step to every worker and returns its handle without waiting."""
        self._num_launched += 1
        step = RemoteStep(self._num_launched)
        if self.step_timings is not None:
            step.timing = [0.0, WallMark(), WallMark()]
            self.step_timings.append(tuple(step.timing))
        self._broadcast(encode(Launch(step.step_id, prev.step_id if prev is not None else None, out)))
        return step

    def collect(self, step: RemoteStep) -> StepResult:
        """Waits for the step's result from rank 0 (every rank collects it, so their states stay in step)."""
        self._broadcast(encode(Collect(step.step_id)))
        message = self._receive()
        if not isinstance(message, StepDone) or message.step_id != step.step_id:
            raise WorkerDiedError(f"expected the result of step {step.step_id}, got {type(message).__name__}")
        if step.timing is not None:
            step.timing[2].record()
        return message.result

    # ---- messages -----------------------------------------------------------------------------------------
    def _broadcast(self, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure   # the ranks are out of step for good: every later call fails the same way
        if self._closed:
            raise WorkerDiedError("the workers were shut down")
        for sock in self._steps:
            # A PUSH socket whose peer is gone blocks on send: never wait without watching the workers.
            while True:
                try:
                    sock.send(data, flags=zmq.NOBLOCK, copy=False)
                    break
                except zmq.Again:
                    if self._dead():
                        raise self._fail(None) from None
                    sock.poll(_POLL_MS, zmq.POLLOUT)

    def _receive(self):
        """The next worker message; WorkerDiedError when a worker failed or died meanwhile."""
        while not self._results.poll(_POLL_MS):
            if self._dead():
                raise self._fail(None)
        message = decode_worker_message(self._results.recv(copy=False).buffer)
        if isinstance(message, WorkerFailed):
            # A rank that fails may only be the witness (a collective broke because a peer was killed): give the
            # others a moment to show their exit, so the message names the first cause.
            deadline = time.monotonic() + _WITNESS_WAIT_S
            while time.monotonic() < deadline and len(self._dead()) < self.world_size - 1:
                time.sleep(0.05)
            raise self._fail(message)
        return message

    def _fail(self, failed: WorkerFailed | None) -> WorkerDiedError:
        """The error that stops the engine; a failure report already queued names its cause."""
        if failed is None and self._results.poll(0):
            message = decode_worker_message(self._results.recv())
            failed = message if isinstance(message, WorkerFailed) else None
        self._failure = WorkerDiedError(self._explain(failed))
        return self._failure

    def _dead(self) -> list[int]:
        return [rank for rank, proc in enumerate(self.procs) if proc.exitcode is not None]

    def _explain(self, failed: WorkerFailed | None = None) -> str:
        """Which ranks died (killed ones first) and which reported a failure, and that the engine stops."""
        dead = sorted((r for r in self._dead() if failed is None or r != failed.rank),
                      key=lambda r: self.procs[r].exitcode >= 0)
        parts = [f"tensor-parallel worker rank {r} (pid {self.procs[r].pid}) died with exit code "
                 f"{self.procs[r].exitcode}" for r in dead]
        if failed is not None:
            parts.append(f"tensor-parallel worker rank {failed.rank} failed: {failed.error}")
        return "; ".join(parts) + "; the engine stops"


@contextlib.contextmanager
def _children_allowed():
    """The engine core runs as a daemonic process, which multiprocessing forbids to start children (it could not
    clean them up). Workers need no such cleanup: each exits by itself when its lifeline pipe from the driver
    closes. So the flag is lifted while a worker starts."""
    config = multiprocessing.current_process()._config
    daemon = config.get("daemon", False)
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = daemon


def _worker_context(cuda: bool):
    """On CPU, workers fork from a server process that imported torch and the model code once, so a worker starts
    in the time of building its shard, not of importing torch again (engines of tiny models start often, in tests).
    On CUDA they are spawned: fresh interpreters, the one start method CUDA supports without conditions; the
    import time is small beside loading the weights."""
    if cuda:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def rank_device(device: str, rank: int) -> str:
    """The device of `rank`: cpu for every rank on CPU, else the rank-th GPU from the one `device` names."""
    if not device.startswith("cuda"):
        return "cpu"
    first = int(device.split(":", 1)[1]) if ":" in device else 0
    return f"cuda:{first + rank}"
