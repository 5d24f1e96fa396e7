"""Write one step's keys and values into the paged KV cache at their slots: one kernel for both k and v.

An fp8 (e4m3) cache stores k / k_scale and v / v_scale, saturated to the format's range; readers multiply back.
"""
import torch

from llmfleet.kernels._triton import check_device, next_pow2, tl, triton

FP8_MAX = 448.0  # largest finite float8_e4m3fn
_FP8_MAX = tl.constexpr(FP8_MAX)  # the same, as the kernel may read a global


def kv_scale_args(kv_cache: torch.Tensor, kv_scales, like: torch.Tensor):
    """(is the cache fp8, (k_scale, v_scale) to pass): 1.0 scalars when an fp8 cache has none; `like` (never read)
    when the cache is not fp8."""
    if kv_cache.dtype != torch.float8_e4m3fn:
        return False, (like, like)
    if kv_scales is None:
        one = torch.ones((), dtype=torch.float32, device=kv_cache.device)
        return True, (one, one)
    return True, tuple(kv_scales)


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, cache_ptr, slot_ptr, k_scale_ptr, v_scale_ptr,
    stride_k_tok, stride_k_head, stride_v_tok, stride_v_head,
    stride_c_kv, stride_c_block, stride_c_off, stride_c_head,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, KV_FP8: tl.constexpr,
):
    # One program per token: all its KV heads, keys and values.
    tok = tl.program_id(0)
    slot = tl.load(slot_ptr + tok)
    heads = tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    # Padding tokens (slot -1) write nothing: they have no heads to write (a mask, not a branch on data).
    num_heads = tl.where(slot >= 0, NUM_KV_HEADS, 0)
    mask = (heads[:, None] < num_heads) & (dims[None, :] < HEAD_DIM)
    slot = tl.maximum(slot, 0)
    dst = (slot // BLOCK_SIZE) * stride_c_block + (slot % BLOCK_SIZE) * stride_c_off
    dst += heads[:, None] * stride_c_head + dims[None, :]                         # [BLOCK_H, BLOCK_D]
    k = tl.load(k_ptr + tok * stride_k_tok + heads[:, None] * stride_k_head + dims[None, :], mask=mask)
    v = tl.load(v_ptr + tok * stride_v_tok + heads[:, None] * stride_v_head + dims[None, :], mask=mask)
    if KV_FP8:
        k = tl.clamp(k.to(tl.float32) / tl.load(k_scale_ptr), -_FP8_MAX, _FP8_MAX)
        v = tl.clamp(v.to(tl.float32) / tl.load(v_scale_ptr), -_FP8_MAX, _FP8_MAX)
    tl.store(cache_ptr + dst, k.to(cache_ptr.dtype.element_ty), mask=mask)
    tl.store(cache_ptr + stride_c_kv + dst, v.to(cache_ptr.dtype.element_ty), mask=mask)


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
             kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """kv_cache: [2, N, S, Hkv, D]; k/v: [T, Hkv, D] (last dim contiguous); slot_mapping: int64 [T], -1 = skip.
    kv_scales: float32 scalars (k_scale, v_scale) on the device, read only by an fp8 cache (None: 1.0)."""
    tokens, num_kv_heads, head_dim = k.shape
    if v.shape != k.shape:
        raise ValueError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)}")
    if slot_mapping.shape != (tokens,):
        raise ValueError(f"slot_mapping: shape {tuple(slot_mapping.shape)}, expected ({tokens},)")
    if kv_cache.dim() != 5 or kv_cache.shape[0] != 2 or kv_cache.shape[3:] != (num_kv_heads, head_dim):
        raise ValueError(f"kv_cache: shape {tuple(kv_cache.shape)}, expected [2, N, S, {num_kv_heads}, {head_dim}]")
    for name, t in (("k", k), ("v", v), ("kv_cache", kv_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: last dimension must be contiguous")
    check_device(_write_kv_kernel, k, "k")
    if tokens == 0:
        return
    fp8, (k_scale, v_scale) = kv_scale_args(kv_cache, kv_scales, slot_mapping)
    _write_kv_kernel[(tokens,)](
        k, v, kv_cache, slot_mapping, k_scale, v_scale,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=kv_cache.shape[2],
        BLOCK_H=next_pow2(num_kv_heads), BLOCK_D=next_pow2(head_dim), KV_FP8=fp8,
    )
