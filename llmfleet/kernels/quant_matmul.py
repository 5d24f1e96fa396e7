"""Weight-only quantized GEMM (W4A16, W8A16): y = x @ dequant(W), with dequantization in the inner loop.

The weight is stored K-major: int4 as int32 [K / 8, N] (eight 4-bit values of consecutive input rows per word,
row k in bits 4 * (k % 8)), int8 as int8 [K, N]; scales and zero points are float32 [K / group, N]; w = (q - z) * s
(no zeros: w = q * s). Each program dequantizes a [BLOCK_K, BLOCK_N] tile of W in registers and multiplies it by
the matching tile of x, so the weight crosses memory at its packed size. For small M (decode) the K loop is split
across programs (partial sums in float32, added after) so that a few rows of x still fill the device.
"""
import functools

import torch

from llmfleet.kernels._triton import check_device, tl, triton


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


@triton.jit
def _wq_matmul_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr, M, N, K,
    stride_xm, stride_qk, stride_sg, stride_ys, stride_ym,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = rm < M
    n_mask = rn < N
    # K range of this split: whole tiles, so that a tile never straddles a group (GROUP % BLOCK_K == 0).
    per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * per_split
    k_end = tl.minimum(k_start + per_split, K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_mask = rk < k_end
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=m_mask[:, None] & k_mask[None, :],
                    other=0.0)                                                            # [BLOCK_M, BLOCK_K]
        w_mask = k_mask[:, None] & n_mask[None, :]
        if BITS == 4:
            packed = tl.load(qw_ptr + (rk // 8)[:, None] * stride_qk + rn[None, :], mask=w_mask, other=0)
            q = ((packed >> ((rk % 8) * 4)[:, None]) & 0xF).to(tl.float32)              # [BLOCK_K, BLOCK_N]
        else:
            q = tl.load(qw_ptr + rk[:, None] * stride_qk + rn[None, :], mask=w_mask, other=0).to(tl.float32)
        g = k0 // GROUP
        s = tl.load(s_ptr + g * stride_sg + rn, mask=n_mask, other=0.0)                   # [BLOCK_N]
        if HAS_ZEROS:
            z = tl.load(z_ptr + g * stride_sg + rn, mask=n_mask, other=0.0)
            w = (q - z[None, :]) * s[None, :]
        else:
            w = q * s[None, :]
        if FP32_DOT:
            acc += tl.dot(x, w, input_precision="ieee")
        else:
            acc += tl.dot(x, w.to(x.dtype))
    y_ptrs = y_ptr + pid_k * stride_ys + rm[:, None] * stride_ym + rn[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def matmul_config(m: int, n: int, k: int, group: int, device: torch.device) -> dict:
    """Tile shapes and the K split. Small tiles under the interpreter; on the GPU a decode shape (M <= 16) takes
    16-row tiles and splits K until the grid has about two programs per multiprocessor (not tuned beyond that)."""
    block_k = next((b for b in (64, 32, 16) if group % b == 0), None)
    if block_k is None:
        raise ValueError(f"group_size: {group} must be a multiple of 16 for the quantized GEMM")
    if device.type != "cuda":
        return dict(block_m=16, block_n=16, block_k=16, split_k=2 if k >= 32 else 1, num_warps=4, num_stages=1)
    if m <= 16:
        tiles = triton.cdiv(n, 64)
        split = max(1, min(16, triton.cdiv(2 * _num_sms(device), tiles), k // block_k))
        return dict(block_m=16, block_n=64, block_k=block_k, split_k=split, num_warps=4, num_stages=3)
    block_m = 32 if m <= 64 else 64
    return dict(block_m=block_m, block_n=128, block_k=block_k, split_k=1, num_warps=4, num_stages=3)


def quant_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                 bits: int, group_size: int, config: dict | None = None) -> torch.Tensor:
    """x: [M, K] (fp16/bf16/fp32); qweight: int32 [K/8, N] (bits 4) or int8 [K, N] (bits 8); scales, zeros:
    float32 [K/group_size, N] -> y [M, N] in x's dtype."""
    m, k = x.shape
    n = qweight.shape[1]
    if bits not in (4, 8):
        raise ValueError(f"bits: must be 4 or 8, got {bits}")
    if qweight.shape[0] * (8 if bits == 4 else 1) != k:
        raise ValueError(f"qweight: shape {tuple(qweight.shape)} does not hold K={k} {bits}-bit rows")
    if scales.shape != (k // group_size, n) or (zeros is not None and zeros.shape != scales.shape):
        raise ValueError(f"scales: shape {tuple(scales.shape)}, expected ({k // group_size}, {n})")
    check_device(_wq_matmul_kernel, x, "x")
    x = x.contiguous()
    cfg = config or matmul_config(m, n, k, group_size, x.device)
    split = cfg["split_k"]
    if split == 1:
        y = torch.empty((1, m, n), dtype=x.dtype, device=x.device)
    else:
        y = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, cfg["block_m"]), triton.cdiv(n, cfg["block_n"]), split)
    _wq_matmul_kernel[grid](
        x, qweight, scales, zeros if zeros is not None else scales, y, m, n, k,
        x.stride(0), qweight.stride(0), scales.stride(0), y.stride(0), y.stride(1),
        BITS=bits, GROUP=group_size, HAS_ZEROS=zeros is not None, SPLIT_K=split,
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        FP32_DOT=x.dtype == torch.float32, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y[0] if split == 1 else y.sum(0).to(x.dtype)
