"""Fused mixture-of-experts MLP: y[t] = sum_j w[t, j] * down_e(silu(gate_e(x[t])) * up_e(x[t])), e = ids[t, j].

Weights are stacked per expert: w13 [E, 2I, H] (gate rows, then up rows) and w2 [E, H, I]. On CUDA:

    moe_align (moe_align.py)   pairs sorted by expert, each run padded to BLOCK_M
    GEMM 1, gated              x rows gathered by pair -> silu(x @ gate_e.T) * (x @ up_e.T), rounded like HF
                               (silu in float32 of the rounded gate, the product rounded once more): inter [T*k, I]
    GEMM 2, weighted           inter @ down_e.T times the pair's routing weight: out [T*k, H]
    sum over the k slots       [T, k, H] -> [T, H]

Each GEMM is one launch over every expert's tiles (a tile reads one expert's weight); tiles past the padded rows
in use exit at once, so the grid size depends only on T, k, E and BLOCK_M (CUDA-graph safe). Block sizes come
from a table per bucket of rows per expert, T * k / E (`config_for`; docs/moe.md). Expert parallelism:
`first_expert` offsets the ids of the experts this rank holds; pairs of other experts contribute nothing here.

`fused_moe_torch` is the reference: a loop over the experts that were hit, in the order and rounding of HF's
`Qwen3MoeExperts.forward` (CPU and tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmfleet.kernels._triton import HAS_TRITON, check_device, tl, triton
from llmfleet.kernels.moe_align import ExpertOrder, moe_align

# Buckets of the mean rows per expert, T * top_k / E (the (tokens, experts) pair in one number: a tile is one
# expert's rows, so this sets how full a BLOCK_M tile can be). Rows:
# (max rows per expert, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages); the first row that holds it.
CONFIG_TABLE = (
    (2, 16, 64, 128, 1, 4, 3),
    (16, 16, 128, 128, 1, 4, 3),
    (64, 32, 128, 64, 8, 4, 4),
    (256, 64, 128, 64, 8, 4, 4),
    (float("inf"), 64, 128, 64, 8, 8, 3),
)
CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")


def config_for(num_tokens: int, top_k: int, num_experts: int) -> dict:
    """The launch parameters of the GEMMs for `num_tokens` tokens routed to `top_k` of `num_experts` experts."""
    rows_per_expert = num_tokens * top_k / max(num_experts, 1)
    for row in CONFIG_TABLE:
        if rows_per_expert <= row[0]:
            return dict(zip(CONFIG_KEYS, row[1:]))
    raise AssertionError("the table's last row covers every size")


@triton.jit(do_not_specialize=["num_pairs", "max_blocks"])  # one compile serves every batch size of a bucket
def _moe_gemm_kernel(a_ptr, b_ptr, c_ptr, weights_ptr, sorted_ptr, block_expert_ptr, num_padded_ptr,
                     N, K, num_pairs, max_blocks, stride_am, stride_be, stride_bn, stride_cm,
                     A_DIV: tl.constexpr, GATED: tl.constexpr, MUL_WEIGHT: tl.constexpr, FP32_DOT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    # c[pair, n] = a[pair // A_DIV, :] @ b[e, n, :] for the pairs of one BLOCK_M tile (one expert e).
    # GATED: b holds [gate; up] (2N rows) and c = silu(gate part) * up part. MUL_WEIGHT: times weights[pair].
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = pid // per_group * GROUP_M
    group_m = tl.minimum(max_blocks - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    pairs = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_mask = pairs < num_pairs
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (pairs // A_DIV).to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n.to(tl.int64)[None, :] * stride_bn + offs_k[:, None]  # [BK, BN]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = offs_k < K - k0
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        b_mask = k_mask[:, None] & n_mask[None, :]
        b = tl.load(b_ptrs, mask=b_mask, other=0.0)
        if FP32_DOT:  # float32 models: exact products, not tf32
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
        if GATED:
            b_up = tl.load(b_ptrs + N * stride_bn, mask=b_mask, other=0.0)
            if FP32_DOT:
                acc_up += tl.dot(a, b_up, input_precision="ieee")
            else:
                acc_up += tl.dot(a, b_up)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    dtype = c_ptr.dtype.element_ty
    if GATED:
        gate = acc.to(dtype).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        acc = act * acc_up.to(dtype).to(tl.float32)
    if MUL_WEIGHT:
        acc = acc.to(dtype).to(tl.float32) * tl.load(weights_ptr + pairs, mask=row_mask, other=0.0)[:, None]
    c_ptrs = c_ptr + pairs.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(dtype), mask=row_mask[:, None] & n_mask[None, :])


def moe_gemm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, order: ExpertOrder, top_k: int, *,
             gated: bool, weights: torch.Tensor | None, config: dict) -> torch.Tensor:
    """One grouped GEMM over the sorted pairs (see `_moe_gemm_kernel`); out [T*k, N] is written in place.

    a: [T, K] when gated (row pair // top_k: the pair's token), else [T*k, K] (row pair);
    b: [E_local, N or 2N, K]; weights: [T*k] float32 or None.
    """
    n = b.shape[1] // 2 if gated else b.shape[1]
    k = b.shape[2]
    if a.stride(1) != 1 or b.stride(2) != 1:
        raise ValueError("a, b: the K dimension must be contiguous")
    max_blocks = order.block_expert.numel()
    meta = _fit_shared_memory({key: config[key] for key in ("BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps",
                                                           "num_stages")}, order.block_m, gated, a.element_size())
    grid = (max_blocks * triton.cdiv(n, config["BLOCK_N"]),)
    _moe_gemm_kernel[grid](
        a, b, out, weights if weights is not None else out, order.sorted_ids, order.block_expert, order.num_padded,
        n, k, out.shape[0], max_blocks, a.stride(0), b.stride(0), b.stride(1), out.stride(0),
        A_DIV=top_k if gated else 1, GATED=gated, MUL_WEIGHT=weights is not None,
        FP32_DOT=a.dtype == torch.float32, BLOCK_M=order.block_m, **meta)
    return out


_SHARED_MEMORY_BUDGET = 224 * 1024   # the H100/H200 limit is 227 KiB per block


def _fit_shared_memory(meta: dict, block_m: int, gated: bool, element_size: int) -> dict:
    """The table's launch parameters, with BLOCK_K halved (then fewer stages) until the pipelined A and B tiles fit
    in shared memory: the table is sized for 16-bit weights, and float32 models need twice the bytes per tile."""
    meta = dict(meta)

    def need() -> int:
        b_rows = (2 if gated else 1) * meta["BLOCK_N"]
        # Triton's software pipeline keeps num_stages - 1 tiles of A and B in flight (its own count on sm_90)
        return (meta["num_stages"] - 1) * (block_m + b_rows) * meta["BLOCK_K"] * element_size

    while need() > _SHARED_MEMORY_BUDGET and meta["BLOCK_K"] > 32:
        meta["BLOCK_K"] //= 2
    while need() > _SHARED_MEMORY_BUDGET and meta["num_stages"] > 2:
        meta["num_stages"] -= 1
    return meta


def fused_moe_triton(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                     topk_ids: torch.Tensor, first_expert: int = 0, num_experts: int | None = None,
                     config: dict | None = None) -> torch.Tensor:
    """x [T, H], w13 [E_local, 2I, H], w2 [E_local, H, I], topk_weights/ids [T, k] -> [T, H] (Triton).

    num_experts: the model's expert count, when this rank holds only E_local of them from `first_expert` on."""
    check_device(_moe_gemm_kernel, x, "x")
    _check(x, w13, w2, topk_weights, topk_ids)
    t, top_k = topk_ids.shape
    num_local = w13.shape[0]
    num_experts = num_experts or num_local
    config = config or config_for(t, top_k, num_experts)
    order = moe_align(topk_ids, num_local, config["BLOCK_M"], first_expert)
    x = x.contiguous()
    # [T*k, I]: rows of other ranks' experts are never written nor read
    inter = torch.empty(t * top_k, w2.shape[2], dtype=x.dtype, device=x.device)
    moe_gemm(x, w13, inter, order, top_k, gated=True, weights=None, config=config)
    # [T*k, H]: every row is written when this rank holds every expert, else the others' rows must read 0
    alloc = torch.empty if num_local == num_experts else torch.zeros
    out = alloc(t * top_k, w2.shape[1], dtype=x.dtype, device=x.device)
    weights = topk_weights.reshape(-1).to(torch.float32).contiguous()
    moe_gemm(inter, w2, out, order, top_k, gated=False, weights=weights, config=config)
    return out.view(t, top_k, -1).sum(dim=1)                                         # [T, H]


def fused_moe_torch(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                    topk_ids: torch.Tensor, first_expert: int = 0) -> torch.Tensor:
    """The reference: the same sum, one expert at a time (each expert's tokens in one matmul)."""
    _check(x, w13, w2, topk_weights, topk_ids)
    out = torch.zeros_like(x)
    local = topk_ids.long() - first_expert                                          # [T, k]
    for e in torch.unique(local[(local >= 0) & (local < w13.shape[0])]).tolist():
        token, slot = torch.where(local == e)
        gate, up = F.linear(x[token], w13[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, w2[e]) * topk_weights[token, slot, None]
        out.index_add_(0, token, y.to(out.dtype))
    return out


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, first_expert: int = 0, num_experts: int | None = None) -> torch.Tensor:
    """The one dispatch point: Triton on CUDA, the torch reference elsewhere. Arguments as `fused_moe_triton`."""
    if x.is_cuda and HAS_TRITON:
        return fused_moe_triton(x, w13, w2, topk_weights, topk_ids, first_expert, num_experts)
    return fused_moe_torch(x, w13, w2, topk_weights, topk_ids, first_expert)


def _check(x, w13, w2, topk_weights, topk_ids) -> None:
    if x.dim() != 2 or w13.dim() != 3 or w2.dim() != 3:
        raise ValueError(f"x, w13, w2: expected [T, H], [E, 2I, H], [E, H, I], got shapes {tuple(x.shape)}, "
                         f"{tuple(w13.shape)}, {tuple(w2.shape)}")
    if w13.shape[2] != x.shape[1] or w2.shape[1] != x.shape[1] or w13.shape[1] != 2 * w2.shape[2]:
        raise ValueError(f"w13, w2: shapes {tuple(w13.shape)} and {tuple(w2.shape)} do not fit hidden size "
                         f"{x.shape[1]} ([E, 2I, H] and [E, H, I])")
    if topk_ids.shape != topk_weights.shape or topk_ids.dim() != 2 or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids, topk_weights: expected [T, k] with T = {x.shape[0]}, got "
                         f"{tuple(topk_ids.shape)} and {tuple(topk_weights.shape)}")
