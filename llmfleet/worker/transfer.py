"""Host <-> device copies that never stall the stream.

A copy from pageable host memory makes CUDA wait for all earlier work on the stream, which would serialise the
host's preparation of step N+1 with the device's step N. Every copy on the step path therefore goes through
pinned memory with non_blocking=True; results come back the same way, with an event to wait on.
"""
from __future__ import annotations

import numpy as np
import torch


def to_device(values: np.ndarray | torch.Tensor | list, device: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small host array on the device, copied asynchronously on CUDA."""
    if isinstance(values, torch.Tensor):
        host = values
    else:
        host = torch.from_numpy(values) if isinstance(values, np.ndarray) else torch.tensor(values, dtype=dtype)
    if dtype is not None and host.dtype != dtype:
        host = host.to(dtype)
    if not device.startswith("cuda"):
        return host
    return host.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """A device tensor copied back to pinned host memory; `wait()` blocks only until that copy is done."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.is_cuda:
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = tensor, None

    def wait(self) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.host
