"""All-reduce for small tensor-parallel messages over peer-to-peer buffers (CUDA, GPUs of one host).

Decode steps all-reduce a few kilobytes to a few megabytes twice a layer; NCCL's ring pays its protocol latency on
each. Here every rank owns a buffer mapped into every peer's address space (torch's symmetric memory: CUDA IPC /
VMM handles; NVLink multicast is not used, so TORCH_SYMM_MEM_DISABLE_MULTICAST=1 may stay set):
  one-shot: each rank copies its input into its buffer, then reads all peers' buffers and sums them (one round,
            world x the message read per rank: the lowest latency for small messages);
  two-shot: each rank reduces 1/world of the message from all peers (reduce-scatter), then gathers the reduced
            parts (all-gather): 2 rounds, 2x the message moved, better from a few hundred kilobytes on.
Messages above the buffer, or where symmetric memory is unavailable (CPU, gloo, one GPU), go to NCCL.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

ONE_SHOT_MAX_BYTES = 256 * 1024   # above this, two-shot (measured crossover on NVLink machines is near here)


def symmetric_memory_available() -> bool:
    """torch was built with the symmetric-memory all-reduce ops (CUDA builds)."""
    try:
        import torch.distributed._symmetric_memory  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch.ops.symm_mem, "one_shot_all_reduce") and hasattr(torch.ops.symm_mem, "two_shot_all_reduce_")


class CustomAllReduce:
    """Sum over `group` of tensors up to `max_bytes`, through one symmetric buffer; NCCL for larger ones."""

    def __init__(self, group: dist.ProcessGroup, device: torch.device, max_bytes: int = 8 * 2**20,
                 dtype: torch.dtype = torch.bfloat16):
        import torch.distributed._symmetric_memory as symm_mem

        self.group, self.dtype = group, dtype
        self.group_name = group.group_name
        if hasattr(symm_mem, "enable_symm_mem_for_group"):
            symm_mem.enable_symm_mem_for_group(self.group_name)
        self.buffer = symm_mem.empty(max_bytes // dtype.itemsize, dtype=dtype, device=device)  # [N] per rank
        symm_mem.rendezvous(self.buffer, self.group_name)   # maps every peer's buffer here (collective)

    def fits(self, x: torch.Tensor) -> bool:
        return x.dtype == self.dtype and x.numel() <= self.buffer.numel() and x.is_contiguous()

    def one_shot(self, x: torch.Tensor) -> torch.Tensor:
        """A new tensor: the sum of every rank's x (one round of peer reads)."""
        staged = self.buffer[: x.numel()]
        staged.copy_(x.view(-1))
        return torch.ops.symm_mem.one_shot_all_reduce(staged, "sum", self.group_name).view_as(x)

    def two_shot(self, x: torch.Tensor) -> torch.Tensor:
        """x, summed over every rank in place (reduce-scatter then all-gather through the peers' buffers)."""
        staged = self.buffer[: x.numel()]
        staged.copy_(x.view(-1))
        torch.ops.symm_mem.two_shot_all_reduce_(staged, "sum", self.group_name)
        return x.copy_(staged.view_as(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of x over the group: one-shot, two-shot or NCCL by size (x itself holds it for the last two)."""
        if not self.fits(x):
            dist.all_reduce(x, group=self.group)
            return x
        if x.numel() * x.element_size() <= ONE_SHOT_MAX_BYTES:
            return self.one_shot(x)
        return self.two_shot(x)
