"""Rotary position embedding, neox style (rotate the two halves of the first rot_dim dims), applied in place.

cos_sin_cache: [max_pos, rot_dim], float32, row p = [cos(p * f) | sin(p * f)] for the rot_dim/2 frequencies f
(`make_cos_sin_cache` builds it as HF does). Rounded like HF's `q * cos + rotate_half(q) * sin`: cos and sin are
cast to q's dtype, each product and the sum are rounded to it (all no-ops in float32).
"""
import torch

from llmfleet.kernels._triton import HAS_TRITON, check_device, next_pow2, tl, triton


@triton.jit
def _rotate_heads(x_ptr, tok, stride_tok, cos, sin, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr):
    """Rotates all heads of one token in place. cos, sin: [1, BLOCK_R] float32 rounded to x's dtype."""
    heads = tl.arange(0, BLOCK_H)[:, None]
    r = tl.arange(0, BLOCK_R)[None, :]
    mask = (heads < NUM_HEADS) & (r < HALF)
    p1 = x_ptr + tok * stride_tok + heads * HEAD_DIM + r                                   # [BLOCK_H, BLOCK_R]
    x1 = tl.load(p1, mask=mask, other=0.0)
    x2 = tl.load(p1 + HALF, mask=mask, other=0.0)
    dt = x1.dtype
    a1 = (x1.to(tl.float32) * cos).to(dt).to(tl.float32)
    b1 = (-x2.to(tl.float32) * sin).to(dt).to(tl.float32)
    a2 = (x2.to(tl.float32) * cos).to(dt).to(tl.float32)
    b2 = (x1.to(tl.float32) * sin).to(dt).to(tl.float32)
    tl.store(p1, (a1 + b1).to(dt), mask=mask)
    tl.store(p1 + HALF, (a2 + b2).to(dt), mask=mask)


@triton.jit
def _rotary_kernel(pos_ptr, q_ptr, k_ptr, cache_ptr, stride_q, stride_k, stride_cache,
                   NUM_Q_HEADS: tl.constexpr, NUM_K_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                   HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_R: tl.constexpr):
    # One program per token: every q and k head of it.
    tok = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + tok).to(tl.int64)
    r = tl.arange(0, BLOCK_R)[None, :]
    cos = tl.load(cache_ptr + pos * stride_cache + r, mask=r < HALF, other=0.0)            # [1, BLOCK_R]
    sin = tl.load(cache_ptr + pos * stride_cache + HALF + r, mask=r < HALF, other=0.0)
    dt = q_ptr.dtype.element_ty
    cos, sin = cos.to(dt).to(tl.float32), sin.to(dt).to(tl.float32)
    _rotate_heads(q_ptr, tok, stride_q, cos, sin, NUM_Q_HEADS, HEAD_DIM, HALF, BLOCK_HQ, BLOCK_R)
    _rotate_heads(k_ptr, tok, stride_k, cos, sin, NUM_K_HEADS, HEAD_DIM, HALF, BLOCK_HK, BLOCK_R)


def make_cos_sin_cache(rot_dim: int, max_pos: int, base: float) -> torch.Tensor:
    """[max_pos, rot_dim] float32: [cos | sin] of position * inv_freq, inv_freq computed as HF does."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))
    freqs = torch.arange(max_pos, dtype=torch.int64).float()[:, None] * inv_freq[None, :]  # [max_pos, rot_dim/2]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1)


def apply_rotary_torch(positions, q, k, cos_sin_cache, head_dim: int):
    for x in _as_heads(q, head_dim, "q"), _as_heads(k, head_dim, "k"):
        half = cos_sin_cache.shape[1] // 2
        cos, sin = cos_sin_cache[positions].to(x.dtype).chunk(2, dim=-1)                  # [T, half] each
        cos, sin = torch.cat([cos, cos], -1)[:, None, :], torch.cat([sin, sin], -1)[:, None, :]
        rot = x[..., :2 * half]
        rotated_half = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
        rot.copy_(rot * cos + rotated_half * sin)
    return q, k


def apply_rotary_triton(positions, q, k, cos_sin_cache, head_dim: int):
    q3, k3 = _as_heads(q, head_dim, "q"), _as_heads(k, head_dim, "k")
    _check(positions, q3, k3, cos_sin_cache, head_dim)
    check_device(_rotary_kernel, q, "q")
    half = cos_sin_cache.shape[1] // 2
    if q3.shape[0]:
        _rotary_kernel[(q3.shape[0],)](
            positions, q3, k3, cos_sin_cache, q3.stride(0), k3.stride(0), cos_sin_cache.stride(0),
            NUM_Q_HEADS=q3.shape[1], NUM_K_HEADS=k3.shape[1], HEAD_DIM=head_dim, HALF=half,
            BLOCK_HQ=next_pow2(q3.shape[1]), BLOCK_HK=next_pow2(k3.shape[1]), BLOCK_R=next_pow2(half), num_warps=4,
            enable_fp_fusion=False)  # else the bf16 product and sum fuse into one fma: one rounding, not HF's two
    return q, k


def apply_rotary(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                 head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates q and k in place and returns them. positions: int [T]; q: [T, Hq, D] or [T, Hq * D]; k likewise;
    the token stride may be anything (slices of a fused qkv output work) but each token's heads must be packed."""
    if q.is_cuda and HAS_TRITON:
        return apply_rotary_triton(positions, q, k, cos_sin_cache, head_dim)
    _check(positions, _as_heads(q, head_dim, "q"), _as_heads(k, head_dim, "k"), cos_sin_cache, head_dim)
    return apply_rotary_torch(positions, q, k, cos_sin_cache, head_dim)


def _as_heads(x: torch.Tensor, head_dim: int, name: str) -> torch.Tensor:
    """[T, H, D] view sharing x's storage; heads and dims of one token must be packed."""
    if x.dim() == 2:
        if x.shape[1] % head_dim:
            raise ValueError(f"{name}: last dim {x.shape[1]} is not a multiple of head_dim {head_dim}")
        x = x.unflatten(1, (x.shape[1] // head_dim, head_dim))
    if x.dim() != 3 or x.shape[2] != head_dim:
        raise ValueError(f"{name}: expected [T, H, {head_dim}] or [T, H * {head_dim}], got {tuple(x.shape)}")
    if x.stride(2) != 1 or x.stride(1) != head_dim:
        raise ValueError(f"{name}: the heads of a token must be packed (strides [*, {head_dim}, 1])")
    return x


def _check(positions, q3, k3, cos_sin_cache, head_dim: int) -> None:
    rot_dim = cos_sin_cache.shape[-1]
    if cos_sin_cache.dim() != 2 or rot_dim % 2 or rot_dim > head_dim or cos_sin_cache.stride(1) != 1:
        raise ValueError(f"cos_sin_cache: expected [max_pos, rot_dim] with an even rot_dim <= {head_dim}, "
                         f"got {tuple(cos_sin_cache.shape)}")
    if positions.shape != (q3.shape[0],) or k3.shape[0] != q3.shape[0]:
        raise ValueError(f"positions: shape {tuple(positions.shape)}, expected ({q3.shape[0]},) like q and k")
    if k3.dtype != q3.dtype:
        raise ValueError(f"k: dtype {k3.dtype} differs from q's {q3.dtype}")
