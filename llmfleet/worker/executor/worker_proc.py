"""One worker process: rank r of the tensor-parallel group, holding its model shard, KV cache and CUDA graphs.

It joins the process group (gloo on CPU, NCCL on CUDA), declares its rank to the model layers, builds a
ModelRunner like the in-process engine's, and then applies the driver's messages in order (messages.py). Every rank
seeds torch's random generator alike, so unseeded sampling draws the same tokens everywhere: each rank feeds its
own sampled tokens to its next step, and they must agree.

It lives only as long as the driver: a pipe from the driver reaches EOF when the driver exits, however it exits,
and the worker then exits at once (a rank blocked in a collective too). SIGINT and SIGTERM are ignored: the driver
decides when workers stop. A failure sends WorkerFailed with the cause, then exits 1.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from dataclasses import dataclass

import zmq

from llmfleet.protocol.config import EngineConfig
from llmfleet.worker.executor.messages import (Collect, Launch, SetEos, Shutdown, StepDone, WorkerFailed,
                                               WorkerReady, decode_driver_message, encode)

logger = logging.getLogger("llmfleet.worker.executor.worker_proc")
SAMPLING_SEED = 0  # every rank's torch generator starts here, so unseeded sampling agrees across ranks


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process needs to start (pickled into the spawned process)."""
    config: EngineConfig
    rank: int
    world_size: int
    device: str            # this rank's own: cpu, or cuda:<index>
    dtype: str             # a torch dtype's name, e.g. bfloat16
    model_path: str
    hf_config: object
    init_method: str       # torch.distributed rendezvous (a file:// store the driver made)
    step_address: str      # the driver's messages to this rank (ZeroMQ PUSH -> this PULL)
    result_address: str    # this rank's messages to the driver (PUSH -> the driver's PULL)
    log_level: str = "INFO"


def run_worker(spec: WorkerSpec, parent_alive) -> None:
    """The process's entry point (multiprocessing target): build the shard, then serve the driver's steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level, format=f"%(asctime)s %(levelname)s worker-{spec.rank}: %(message)s")
    threading.Thread(target=exit_with_parent, args=(parent_alive,), daemon=True, name="parent-watch").start()
    context = zmq.Context()
    steps, results = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    steps.connect(spec.step_address)
    results.connect(spec.result_address)
    code = 0
    try:
        runner = _build(spec)
        results.send(encode(_ready(spec.rank, runner)))
        _serve(runner, spec.rank, steps, results)
    except BaseException as exc:  # noqa: BLE001 - the driver must learn why, then this rank is done
        logger.error("worker failed:\n%s", traceback.format_exc())
        results.send(encode(WorkerFailed(spec.rank, _describe(exc))))
        code = 1
    results.close(linger=5000)   # the last message (a failure's cause above all) must get out before exiting
    steps.close(linger=0)
    context.term()
    os._exit(code)


def _build(spec: WorkerSpec):
    import torch
    import torch.distributed as dist

    from llmfleet.model.parallel_state import set_tensor_parallel
    from llmfleet.worker.runner import ModelRunner

    cuda = spec.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(spec.device))
    else:  # the ranks share the host's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.world_size))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=spec.init_method, rank=spec.rank,
                            world_size=spec.world_size)
    if cuda:  # NCCL makes its communicator on the first collective: now, not inside a CUDA-graph capture
        dist.all_reduce(torch.zeros(1, device=spec.device))
        torch.cuda.synchronize()
    set_tensor_parallel(spec.rank, spec.world_size)
    torch.manual_seed(SAMPLING_SEED)
    return ModelRunner(spec.config, spec.device, getattr(torch, spec.dtype), spec.model_path, spec.hf_config)


def _ready(rank: int, runner) -> WorkerReady:
    import dataclasses

    return WorkerReady(
        rank, runner.num_blocks, runner.max_model_len, runner.is_encoder, dataclasses.asdict(runner.info),
        runner.weight_bytes, list(runner.graphs.sizes) if runner.graphs is not None else [],
        list(runner.piecewise.sizes) if runner.piecewise is not None else [])


def _serve(runner, rank: int, steps: zmq.Socket, results: zmq.Socket) -> None:
    """Applies the driver's messages until Shutdown; rank 0 answers each Collect with the step's result."""
    launched = {}   # step id -> LaunchedStep, until collected
    while True:
        message = decode_driver_message(steps.recv(copy=False).buffer)
        if isinstance(message, Launch):
            prev = launched.get(message.prev_step_id) if message.prev_step_id is not None else None
            launched[message.step_id] = runner.launch(message.out, prev)
        elif isinstance(message, Collect):
            result = runner.collect(launched.pop(message.step_id))
            if rank == 0:
                results.send(encode(StepDone(message.step_id, result)), copy=False)
        elif isinstance(message, SetEos):
            runner.eos_token_ids = frozenset(message.token_ids)
        elif isinstance(message, Shutdown):
            return


def _describe(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return f"{type(exc).__name__}: {exc}\n{tail}"


def exit_with_parent(parent_alive) -> None:
    """Blocks on the parent's pipe (a worker's driver, an engine core's API server); EOF (the parent is gone) ends
    this process at once."""
    try:
        parent_alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(0)
