"""Sorting a routed batch by expert: the gather order the grouped GEMMs of fused_moe.py read.

A batch of T tokens routed to top_k experts each has T * top_k (token, slot) pairs, numbered i = t * top_k + j.
`moe_align` groups the pairs by expert, each expert's run padded up to a multiple of BLOCK_M, so that every
BLOCK_M-row tile of the sorted order belongs to one expert:

    sorted_ids  [max_blocks * BLOCK_M] int32: pair numbers, expert by expert; padding holds T * top_k (no pair)
    block_expert [max_blocks] int32: the (local) expert of each tile; num_local past the last used tile
    num_padded  [1] int32: rows in use (sum of the padded runs); tiles at or past it are skipped

Sizes depend only on T, top_k, the local expert count and BLOCK_M (never on the routing), and nothing is read back
to the host, so the sort runs inside CUDA graphs. Pairs routed to an expert outside [first_expert, first_expert +
num_local) belong to another rank's experts (expert parallelism) and are left out. Within an expert the order of
pairs is that of the atomic counters, which may vary between runs; the GEMMs compute each row on its own, so the
result does not depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llmfleet.kernels._triton import check_device, next_pow2, tl, triton

_BLOCK = 256        # pairs per program of the count and scatter kernels
_BLOCK_TILES = 64   # tiles per iteration of the offsets kernel


@dataclass(frozen=True, slots=True)
class ExpertOrder:
    """The output of `moe_align` (see the module docstring)."""
    sorted_ids: torch.Tensor
    block_expert: torch.Tensor
    num_padded: torch.Tensor
    block_m: int


@triton.jit(do_not_specialize=["numel"])
def _count_kernel(ids_ptr, counts_ptr, numel, first_expert, num_local, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    e = tl.load(ids_ptr + offs, mask=mask, other=-1).to(tl.int32) - first_expert
    valid = mask & (e >= 0) & (e < num_local)
    tl.atomic_add(counts_ptr + e, 1, mask=valid)


@triton.jit(do_not_specialize=["max_blocks"])
def _offsets_kernel(counts_ptr, starts_ptr, block_expert_ptr, num_padded_ptr, num_local, max_blocks,
                    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_TILES: tl.constexpr):
    # One program: padded run lengths -> run starts, the total, and each tile's expert (the number of runs that end
    # at or before the tile's first row).
    e = tl.arange(0, BLOCK_E)
    e_mask = e < num_local
    counts = tl.load(counts_ptr + e, mask=e_mask, other=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    tl.store(starts_ptr + e, ends - padded, mask=e_mask)
    tl.store(num_padded_ptr, tl.sum(padded, axis=0))
    ends = tl.where(e_mask, ends, 2147483647)
    for b0 in range(0, max_blocks, BLOCK_TILES):
        b = b0 + tl.arange(0, BLOCK_TILES)
        first_row = b * BLOCK_M
        expert = tl.sum((ends[None, :] <= first_row[:, None]).to(tl.int32), axis=1)
        tl.store(block_expert_ptr + b, expert, mask=b < max_blocks)


@triton.jit(do_not_specialize=["numel"])
def _scatter_kernel(ids_ptr, starts_ptr, cursor_ptr, sorted_ptr, numel, first_expert, num_local,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    e = tl.load(ids_ptr + offs, mask=mask, other=-1).to(tl.int32) - first_expert
    valid = mask & (e >= 0) & (e < num_local)
    rank = tl.atomic_add(cursor_ptr + e, 1, mask=valid)
    start = tl.load(starts_ptr + e, mask=valid, other=0)
    tl.store(sorted_ptr + start + rank, offs.to(tl.int32), mask=valid)


def max_blocks_of(numel: int, num_local: int, block_m: int) -> int:
    """Tiles the padded order can need: every pair, plus up to BLOCK_M - 1 padding rows per expert."""
    return triton.cdiv(numel + num_local * (block_m - 1), block_m)


def moe_align(topk_ids: torch.Tensor, num_local: int, block_m: int, first_expert: int = 0) -> ExpertOrder:
    """topk_ids [T, top_k] (global expert ids) -> the expert-sorted order of the pairs (module docstring)."""
    check_device(_count_kernel, topk_ids, "topk_ids")
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids: expected [T, top_k], got shape {tuple(topk_ids.shape)}")
    ids = topk_ids.reshape(-1).contiguous()
    numel, device = ids.numel(), ids.device
    max_blocks = max_blocks_of(numel, num_local, block_m)
    sorted_ids = torch.full((max_blocks * block_m,), numel, dtype=torch.int32, device=device)
    block_expert = torch.empty(max_blocks, dtype=torch.int32, device=device)
    num_padded = torch.empty(1, dtype=torch.int32, device=device)
    scratch = torch.zeros(3, num_local, dtype=torch.int32, device=device)  # counts, run starts, cursors
    counts, starts, cursor = scratch[0], scratch[1], scratch[2]
    grid = (triton.cdiv(max(numel, 1), _BLOCK),)
    _count_kernel[grid](ids, counts, numel, first_expert, num_local, BLOCK=_BLOCK)
    _offsets_kernel[(1,)](counts, starts, block_expert, num_padded, num_local, max_blocks, BLOCK_M=block_m,
                          BLOCK_E=next_pow2(num_local), BLOCK_TILES=_BLOCK_TILES)
    _scatter_kernel[grid](ids, starts, cursor, sorted_ids, numel, first_expert, num_local, BLOCK=_BLOCK)
    return ExpertOrder(sorted_ids, block_expert, num_padded, block_m)


def moe_align_torch(topk_ids: torch.Tensor, num_local: int, block_m: int, first_expert: int = 0) -> ExpertOrder:
    """The same order with torch ops (stable within each expert): the reference the kernel is tested against."""
    ids = topk_ids.reshape(-1).long() - first_expert
    numel = ids.numel()
    valid = (ids >= 0) & (ids < num_local)
    counts = torch.bincount(ids[valid], minlength=num_local)
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    starts = ends - padded
    max_blocks = max_blocks_of(numel, num_local, block_m)
    sorted_ids = torch.full((max_blocks * block_m,), numel, dtype=torch.int32)
    order = torch.argsort(torch.where(valid, ids, num_local), stable=True)[: int(valid.sum())]
    local = ids[order]
    rank = torch.arange(order.numel()) - (torch.cumsum(counts, 0) - counts)[local]
    sorted_ids[starts[local] + rank] = order.to(torch.int32)
    first_rows = torch.arange(max_blocks) * block_m
    block_expert = (ends[None, :] <= first_rows[:, None]).sum(1).to(torch.int32)
    return ExpertOrder(sorted_ids, block_expert, ends[-1:].to(torch.int32), block_m)
