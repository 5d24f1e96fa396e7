"""Batched LoRA deltas over a step's tokens grouped by adapter slot: y[t] += (x[t] @ A[s]^T) @ B[s]^T.

The tokens of one step use up to S adapters (slots). `order` lists the token rows grouped by slot, `starts`
[S + 1] bounds each slot's group (tokens of the base model are in no group and get no delta), and `tiles` cuts the
groups into (slot, first, end) tiles of at most TOKEN_BLOCK tokens; all are device tensors of a fixed size, so a
CUDA graph captured once replays for any grouping. Two kernels, segmented like SGMV:

    shrink:  v[t, :] = x[t] @ A[s]^T        x [T, K], A [S, R, K]      -> v [T, R] (float32)
    expand:  y[t, :] += v[t] @ B[s]^T       v [T, R], B [S, N, R]      -> y [T, N] (in place)

Grid: (tile, split of K) and (tile, block of N), with cdiv(T, TOKEN_BLOCK) + S tiles (enough for any grouping of T
tokens; the unused ones are empty and their programs exit), so the grids depend only on T and S. The scale
alpha / r is folded into B when an adapter is loaded. A packed layer (q|k|v, gate|up) stacks its parts' A along R
and holds each part's B in its own R columns, so one pair covers it.
"""
from __future__ import annotations

import torch

from llmfleet.kernels._triton import HAS_TRITON, check_device, next_pow2, tl, triton

TOKEN_BLOCK = 16   # tokens per tile: the host cuts each slot's group into tiles of at most this many (`tiles`)


def num_tiles(max_tokens: int, num_slots: int) -> int:
    """Tiles any grouping of `max_tokens` tokens over `num_slots` slots can need (one partial tile per slot)."""
    return -(-max_tokens // TOKEN_BLOCK) + num_slots


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, v_ptr, order_ptr, tiles_ptr, K, R, K_PER_SPLIT, stride_x, stride_as, stride_ar,
                   stride_v, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
                   PRECISION: tl.constexpr):
    # Grid: (tiles, K splits). Each split adds its partial product into v (float32, zeroed) atomically, so a
    # decode step's few tokens still spread over many programs instead of one long loop over K.
    tile = tl.program_id(0)
    slot = tl.load(tiles_ptr + 3 * tile)
    first = tl.load(tiles_ptr + 3 * tile + 1)
    end = tl.load(tiles_ptr + 3 * tile + 2)
    if first >= end:
        return
    idx = first + tl.arange(0, BLOCK_T)
    live = idx < end
    rows = tl.load(order_ptr + idx, mask=live, other=0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    k_start = tl.program_id(1) * K_PER_SPLIT
    for k0 in range(k_start, k_start + K_PER_SPLIT, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :], mask=live[:, None] & (k[None, :] < K), other=0.0)
        a = tl.load(a_base + r[None, :] * stride_ar + k[:, None], mask=(r[None, :] < R) & (k[:, None] < K),
                    other=0.0)                                   # [BLOCK_K, BLOCK_R] = A[slot]^T tile
        acc += tl.dot(x, a, input_precision=PRECISION)
    tl.atomic_add(v_ptr + rows[:, None] * stride_v + r[None, :], acc, mask=live[:, None] & (r[None, :] < R))


@triton.jit
def _expand_kernel(v_ptr, b_ptr, y_ptr, order_ptr, tiles_ptr, N, R, stride_v, stride_bs, stride_bn, stride_y,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr):
    # Grid: (tiles, blocks of N).
    tile = tl.program_id(0)
    slot = tl.load(tiles_ptr + 3 * tile)
    first = tl.load(tiles_ptr + 3 * tile + 1)
    end = tl.load(tiles_ptr + 3 * tile + 2)
    if first >= end:
        return
    idx = first + tl.arange(0, BLOCK_T)
    live = idx < end
    rows = tl.load(order_ptr + idx, mask=live, other=0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    v = tl.load(v_ptr + rows[:, None] * stride_v + r[None, :], mask=live[:, None] & (r[None, :] < R), other=0.0)
    b = tl.load(b_ptr + slot.to(tl.int64) * stride_bs + n[None, :] * stride_bn + r[:, None],
                mask=(n[None, :] < N) & (r[:, None] < R), other=0.0)   # [BLOCK_R, BLOCK_N] = B[slot]^T tile
    delta = tl.dot(v.to(b.dtype), b, input_precision=PRECISION)
    out = y_ptr + rows[:, None] * stride_y + n[None, :]
    mask = live[:, None] & (n[None, :] < N)
    y = tl.load(out, mask=mask, other=0.0)
    tl.store(out, (y.to(tl.float32) + delta).to(y_ptr.dtype.element_ty), mask=mask)


def lora_delta_torch(y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
                     starts: torch.Tensor) -> torch.Tensor:
    """The reference (and the CPU path): y [T, N] += per slot group (x @ A[s]^T) @ B[s]^T, in place."""
    bounds = starts.tolist()
    for slot in range(len(bounds) - 1):
        if bounds[slot + 1] > bounds[slot]:
            rows = order[bounds[slot]:bounds[slot + 1]].long()
            y.index_add_(0, rows, (x[rows] @ a[slot].T) @ b[slot].T)
    return y


def lora_delta_triton(y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
                      starts: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """Same as `lora_delta_torch`, as a shrink and an expand launch over `tiles` (grids fixed by T and S)."""
    check_device(_shrink_kernel, x, "x")
    tokens, k = x.shape
    slots, r, n = a.shape[0], a.shape[1], b.shape[1]
    if tokens == 0:
        return y
    x = x if x.stride(-1) == 1 else x.contiguous()
    v = torch.zeros(tokens, r, dtype=torch.float32, device=x.device)   # only rows in a group are used
    block_r = next_pow2(r, 16)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"   # float32 stays exact (no TF32 rounding)
    grid_tiles = min(num_tiles(tokens, slots), tiles.shape[0])
    block_k = 64
    # Split K only as far as a step needs programs: a decode step's few tiles split 16 ways, a long prefill's
    # hundreds of tiles hardly at all (fewer atomic adds into v).
    splits = max(1, min(k // 256, 64, -(-1024 // grid_tiles)))
    per_split = triton.cdiv(triton.cdiv(k, splits), block_k) * block_k
    _shrink_kernel[(grid_tiles, triton.cdiv(k, per_split))](
        x, a, v, order, tiles, k, r, per_split, x.stride(0), a.stride(0), a.stride(1), v.stride(0),
        BLOCK_T=TOKEN_BLOCK, BLOCK_K=block_k, BLOCK_R=block_r, PRECISION=precision, num_warps=4)
    block_n = 128
    _expand_kernel[(grid_tiles, triton.cdiv(n, block_n))](
        v, b, y, order, tiles, n, r, v.stride(0), b.stride(0), b.stride(1), y.stride(0),
        BLOCK_T=TOKEN_BLOCK, BLOCK_N=block_n, BLOCK_R=block_r, PRECISION=precision, num_warps=4)
    return y


def token_tiles(starts: list[int], size: int) -> list[tuple[int, int, int]]:
    """(slot, first, end) positions in `order` of each tile of at most TOKEN_BLOCK tokens, padded with empty
    tiles to `size` rows (what `tiles` holds)."""
    out = [(slot, first, min(first + TOKEN_BLOCK, starts[slot + 1]))
           for slot in range(len(starts) - 1) for first in range(starts[slot], starts[slot + 1], TOKEN_BLOCK)]
    return out + [(0, 0, 0)] * (size - len(out))


def lora_delta(y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
               starts: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """y [T, N] += LoRA deltas of x [T, K] with A [S, R, K], B [S, N, R] over the groups `order` / `starts`
    (int32 [>= T] and [S + 1]) and their `tiles` (int32 [num_tiles, 3], `token_tiles`). The one dispatch point:
    Triton on CUDA, the torch reference elsewhere."""
    if x.is_cuda and HAS_TRITON:
        return lora_delta_triton(y, x, a, b, order, starts, tiles)
    return lora_delta_torch(y, x, a, b, order, starts)
