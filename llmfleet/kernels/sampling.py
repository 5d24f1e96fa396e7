"""Sampling from softmax(logits / T) in one pass over the logits: the Gumbel-max trick.

argmax(logits / T + G), with G = -log(-log U) independent standard Gumbel noise, is a sample from
softmax(logits / T): no softmax, no normalisation, no noise tensor in memory. Each program reduces one row in
tiles, drawing U from Philox with (seed, row * V + column) so the result is a pure function of seed and logits.
"""
from __future__ import annotations

import torch

from llmfleet.kernels._triton import check_device, tl, triton

_BLOCK = 2048


@triton.jit(do_not_specialize=["seed"])  # a fresh seed every step must not mean a fresh compile
def _gumbel_argmax_kernel(logits_ptr, inv_temp_ptr, out_ptr, seed, stride, vocab, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    inv_temp = tl.load(inv_temp_ptr + row)
    best_score = float("-inf")
    best_index = 0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(logits_ptr + row.to(tl.int64) * stride + cols, mask=mask, other=float("-inf")).to(tl.float32)
        u = tl.rand(seed, row * vocab + cols)
        gumbel = -tl.log(-tl.log(tl.maximum(u, 1e-20)))
        score = tl.where(mask, x * inv_temp + gumbel, float("-inf"))
        tile_best = tl.max(score, axis=0)
        tile_index = tl.argmax(score, axis=0) + start
        better = tile_best > best_score
        best_index = tl.where(better, tile_index, best_index)
        best_score = tl.where(better, tile_best, best_score)
    tl.store(out_ptr + row, best_index)


def gumbel_sample(logits: torch.Tensor, inv_temperature: torch.Tensor, seed: int) -> torch.Tensor:
    """logits [B, V] (any float dtype, last dim contiguous); inv_temperature float32 [B] -> token ids int64 [B]."""
    check_device(_gumbel_argmax_kernel, logits, "logits")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    rows, vocab = logits.shape
    if rows * vocab >= 2**31:
        raise ValueError(f"logits: {rows} x {vocab} exceeds the sampler's 2^31 noise offsets; sample in chunks")
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if rows:
        _gumbel_argmax_kernel[(rows,)](logits, inv_temperature, out, seed, logits.stride(0), vocab,
                                       BLOCK=_BLOCK, num_warps=8)
    return out
