"""Tensor-parallel state of this process: its rank and the group size (1/1 unless a worker sets them up).

Layers read the state when they are built (to size their shards) and when they run (to reduce partial results),
so a worker calls `set_tensor_parallel` once, after `torch.distributed.init_process_group` and before building
the model. With size 1 no collective ever runs and torch.distributed need not be initialised.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(slots=True)
class _TensorParallelState:
    rank: int = 0
    size: int = 1
    group: dist.ProcessGroup | None = None  # None: the default (world) group


_STATE = _TensorParallelState()


def set_tensor_parallel(rank: int, size: int, group: dist.ProcessGroup | None = None) -> None:
    """Declare this process as `rank` of a tensor-parallel group of `size` processes."""
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank: must be in [0, {size}), got {rank}")
    _STATE.rank, _STATE.size, _STATE.group = rank, size, group


def reset_tensor_parallel() -> None:
    """Back to a single process (rank 0 of 1)."""
    set_tensor_parallel(0, 1, None)


def get_tp_rank() -> int:
    return _STATE.rank


def get_tp_size() -> int:
    return _STATE.size


def tp_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum of x over the group (in place when size > 1); x itself when size is 1."""
    if _STATE.size == 1:
        return x
    dist.all_reduce(x, group=_STATE.group)
    return x


def tp_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Concatenation of every rank's x along `dim`, in rank order; x itself when size is 1."""
    if _STATE.size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_STATE.size)]
    dist.all_gather(parts, x.contiguous(), group=_STATE.group)
    return torch.cat(parts, dim=dim)
