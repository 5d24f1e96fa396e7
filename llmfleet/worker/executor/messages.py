"""What the engine core (the driver) and its worker processes say to each other, as msgspec messages.

Driver -> every worker, in one order: `Launch` a step (the scheduler's plain-data SchedulerOutput), `Collect` it,
`SetEos`, `Shutdown`. Each worker applies them to its own ModelRunner exactly as the in-process engine would call
it, so every rank holds the same sequence states. Worker -> driver: `WorkerReady` once built, `StepDone` from rank 0
(the sampled tokens are the same on every rank: the logits are gathered over the vocabulary and every rank draws
from the same random stream), `WorkerFailed` from any rank that raised.
"""
from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.worker.runner import StepResult


class Launch(msgspec.Struct, tag=True, array_like=True):
    step_id: int                 # the driver's handle for this step
    prev_step_id: int | None     # the step still in flight whose device tokens fill this one's placeholders
    out: SchedulerOutput         # grammar_bitmask travels as (shape, int32 bytes): see encode_step / decode_step


class Collect(msgspec.Struct, tag=True, array_like=True):
    step_id: int


class SetEos(msgspec.Struct, tag=True, array_like=True):
    token_ids: list[int]


class Shutdown(msgspec.Struct, tag=True, array_like=True):
    pass


DriverMessage = Launch | Collect | SetEos | Shutdown


class WorkerReady(msgspec.Struct, tag=True, array_like=True):
    rank: int
    num_blocks: int
    max_model_len: int
    is_encoder: bool
    info: dict[str, Any]                 # ModelInfo's fields
    weight_bytes: int
    decode_graph_sizes: list[int]        # batch sizes with a captured decode graph (empty: none)
    piecewise_sizes: list[int]           # token counts with piecewise graphs (empty: none)


class StepDone(msgspec.Struct, tag=True, array_like=True):
    step_id: int
    result: StepResult


class WorkerFailed(msgspec.Struct, tag=True, array_like=True):
    rank: int
    error: str                           # "ExceptionType: message" and the traceback's last lines


WorkerMessage = WorkerReady | StepDone | WorkerFailed


def _enc_hook(obj):
    if isinstance(obj, np.ndarray):
        return {"shape": list(obj.shape), "dtype": str(obj.dtype), "data": obj.tobytes()}
    raise NotImplementedError(f"cannot send a {type(obj).__name__} to a worker")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DRIVER_DECODER = msgspec.msgpack.Decoder(DriverMessage)
_WORKER_DECODER = msgspec.msgpack.Decoder(WorkerMessage)


def encode(message) -> bytes:
    return _ENCODER.encode(message)


def decode_driver_message(data) -> Launch | Collect | SetEos | Shutdown:
    """A driver message; a Launch's grammar bitmask back as a numpy array."""
    message = _DRIVER_DECODER.decode(data)
    if isinstance(message, Launch) and isinstance(message.out.grammar_bitmask, dict):
        mask = message.out.grammar_bitmask
        message.out.grammar_bitmask = np.frombuffer(mask["data"], dtype=mask["dtype"]).reshape(mask["shape"])
    return message


def decode_worker_message(data) -> WorkerReady | StepDone | WorkerFailed:
    return _WORKER_DECODER.decode(data)
