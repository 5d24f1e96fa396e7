"""4-bit packing: our K-major layout and the two checkpoint layouts we read (GPTQ, AWQ).

- ours and GPTQ's qweight: int32 [K / 8, N]; input row k sits in word k // 8, bits 4 * (k % 8) (sequential).
- GPTQ qzeros: int32 [K / G, N / 8], packed along N sequentially, each stored as zero - 1 (the format's offset).
- AWQ qweight: int32 [K, N / 8] and qzeros [K / G, N / 8], packed along N in AWQ's interleaved order: the nibble
  j of a word holds column AWQ_ORDER[j] of its block of eight. AWQ zeros are stored as they are.
Scales of both are [K / G, N] (float16).
"""
from __future__ import annotations

import torch

SEQUENTIAL = (0, 1, 2, 3, 4, 5, 6, 7)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_SHIFTS = torch.arange(0, 32, 4)


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2^32) -> int32 with the same bits."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_rows(q: torch.Tensor) -> torch.Tensor:
    """q: [K, N] values in [0, 16) -> int32 [K / 8, N] (row k in word k // 8, nibble k % 8)."""
    k, n = q.shape
    if k % 8:
        raise ValueError(f"qweight: {k} input rows are not a multiple of 8")
    nibbles = q.to(torch.int64).view(k // 8, 8, n) << _SHIFTS.to(q.device)[None, :, None]
    return _to_int32(nibbles.sum(1))


def unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """int32 [K / 8, N] -> uint8 [K, N]."""
    rows, n = packed.shape
    nibbles = (packed[:, None, :].to(torch.int64) >> _SHIFTS.to(packed.device)[None, :, None]) & 0xF
    return nibbles.reshape(rows * 8, n).to(torch.uint8)


def pack_cols(q: torch.Tensor, order=SEQUENTIAL) -> torch.Tensor:
    """q: [R, N] values in [0, 16) -> int32 [R, N / 8]; nibble j of a word holds column order[j] of its block."""
    r, n = q.shape
    if n % 8:
        raise ValueError(f"qzeros: {n} output columns are not a multiple of 8")
    blocks = q.to(torch.int64).view(r, n // 8, 8)[:, :, list(order)]
    return _to_int32((blocks << _SHIFTS.to(q.device)).sum(-1))


def unpack_cols(packed: torch.Tensor, order=SEQUENTIAL) -> torch.Tensor:
    """int32 [R, N / 8] -> uint8 [R, N], the inverse of pack_cols with the same order."""
    r, words = packed.shape
    nibbles = (packed[:, :, None].to(torch.int64) >> _SHIFTS.to(packed.device)) & 0xF  # [R, N/8, 8]
    out = torch.empty_like(nibbles)
    out[:, :, list(order)] = nibbles
    return out.reshape(r, words * 8).to(torch.uint8)


def quantize_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit, one (scale, zero) per `group` inputs of each output row.

    weight: [N, K] float -> (q uint8 [N, K] in [0, 16), scales float32 [N, K / G], zeros float32 [N, K / G]),
    with weight ~= (q - zero) * scale. The zero point is an integer, so that 0.0 is exactly representable.
    """
    n, k = weight.shape
    w = weight.float().view(n, k // group, group)
    lo = w.amin(-1).clamp(max=0.0)
    hi = w.amax(-1).clamp(min=0.0)
    scales = ((hi - lo) / 15.0).clamp(min=1e-8)
    zeros = (-lo / scales).round().clamp(0, 15)
    q = (w / scales[..., None]).round() + zeros[..., None]
    return q.clamp(0, 15).to(torch.uint8).view(n, k), scales, zeros


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """q [N, K], scales/zeros [N, K / G] -> float32 [N, K]."""
    n, k = q.shape
    groups = scales.shape[1]
    w = (q.float().view(n, groups, k // groups) - zeros[..., None]) * scales[..., None]
    return w.view(n, k)
