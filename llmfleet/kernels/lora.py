"""Batched LoRA deltas over a step's tokens grouped by adapter slot: y[t] += (x[t] @ A[s]^T) @ B[s]^T.

The tokens of one step use up to S adapters (slots). `order` lists the token rows grouped by slot and `starts`
[S + 1] bounds each slot's group (tokens of the base model are in no group and get no delta); both are device
tensors of a fixed size, so a CUDA graph captured once replays for any grouping. Two kernels, segmented like SGMV:

    shrink:  v[t, :] = x[t] @ A[s]^T        x [T, K], A [S, R, K]      -> v [T, R]
    expand:  y[t, :] += v[t] @ B[s]^T       v [T, R], B [S, N, R]      -> y [T, N] (in place)

Grid: (slot, block of that slot's tokens[, block of N]); a program whose block lies past its slot's group exits,
so the grid depends only on T and S. The scale alpha / r is folded into B when an adapter is loaded. A packed
layer (q|k|v, gate|up) stacks its parts' A along R and holds each part's B in its own R columns, so one pair covers it.
"""
from __future__ import annotations

import torch

from llmfleet.kernels._triton import HAS_TRITON, check_device, next_pow2, tl, triton

_BLOCK_T = 16


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, v_ptr, order_ptr, starts_ptr, K, R, stride_x, stride_as, stride_ar, stride_v,
                   BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr):
    slot = tl.program_id(0)
    first = tl.load(starts_ptr + slot) + tl.program_id(1) * BLOCK_T
    end = tl.load(starts_ptr + slot + 1)
    if first >= end:
        return
    idx = first + tl.arange(0, BLOCK_T)
    live = idx < end
    rows = tl.load(order_ptr + idx, mask=live, other=0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :], mask=live[:, None] & (k[None, :] < K), other=0.0)
        a = tl.load(a_base + r[None, :] * stride_ar + k[:, None], mask=(r[None, :] < R) & (k[:, None] < K),
                    other=0.0)                                   # [BLOCK_K, BLOCK_R] = A[slot]^T tile
        acc += tl.dot(x, a, input_precision=PRECISION)
    tl.store(v_ptr + rows[:, None] * stride_v + r[None, :], acc.to(v_ptr.dtype.element_ty),
             mask=live[:, None] & (r[None, :] < R))


@triton.jit
def _expand_kernel(v_ptr, b_ptr, y_ptr, order_ptr, starts_ptr, N, R, stride_v, stride_bs, stride_bn, stride_y,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr):
    slot = tl.program_id(0)
    first = tl.load(starts_ptr + slot) + tl.program_id(1) * BLOCK_T
    end = tl.load(starts_ptr + slot + 1)
    if first >= end:
        return
    idx = first + tl.arange(0, BLOCK_T)
    live = idx < end
    rows = tl.load(order_ptr + idx, mask=live, other=0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    v = tl.load(v_ptr + rows[:, None] * stride_v + r[None, :], mask=live[:, None] & (r[None, :] < R), other=0.0)
    b = tl.load(b_ptr + slot.to(tl.int64) * stride_bs + n[None, :] * stride_bn + r[:, None],
                mask=(n[None, :] < N) & (r[:, None] < R), other=0.0)   # [BLOCK_R, BLOCK_N] = B[slot]^T tile
    delta = tl.dot(v, b, input_precision=PRECISION)
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
                      starts: torch.Tensor) -> torch.Tensor:
    """Same as `lora_delta_torch`, as a shrink and an expand launch (grids fixed by T and S)."""
    check_device(_shrink_kernel, x, "x")
    tokens, k = x.shape
    slots, r, n = a.shape[0], a.shape[1], b.shape[1]
    if tokens == 0:
        return y
    x = x if x.stride(-1) == 1 else x.contiguous()
    v = torch.empty(tokens, r, dtype=x.dtype, device=x.device)   # only rows in a group are written and read
    block_r = next_pow2(r, 16)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"   # float32 stays exact (no TF32 rounding)
    t_blocks = triton.cdiv(tokens, _BLOCK_T)
    _shrink_kernel[(slots, t_blocks)](x, a, v, order, starts, k, r, x.stride(0), a.stride(0), a.stride(1),
                                      v.stride(0), BLOCK_T=_BLOCK_T, BLOCK_K=64, BLOCK_R=block_r,
                                      PRECISION=precision, num_warps=4)
    block_n = 64
    _expand_kernel[(slots, t_blocks, triton.cdiv(n, block_n))](
        v, b, y, order, starts, n, r, v.stride(0), b.stride(0), b.stride(1), y.stride(0),
        BLOCK_T=_BLOCK_T, BLOCK_N=block_n, BLOCK_R=block_r, PRECISION=precision, num_warps=4)
    return y


def lora_delta(y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
               starts: torch.Tensor) -> torch.Tensor:
    """y [T, N] += LoRA deltas of x [T, K] with A [S, R, K], B [S, N, R] over the groups `order` / `starts`
    (int32 [>= T] and [S + 1]). The one dispatch point: Triton on CUDA, the torch reference elsewhere."""
    if x.is_cuda and HAS_TRITON:
        return lora_delta_triton(y, x, a, b, order, starts)
    return lora_delta_torch(y, x, a, b, order, starts)
