"""RMSNorm, computed in float32 like Hugging Face's, with an optional fused residual add.

On CUDA the math runs as one Triton kernel per call (llmfleet.kernels.norm), in HF's rounding order, instead of ~8
elementwise launches.
"""
from __future__ import annotations

import torch
from torch import nn

from llmfleet.model.layers.linear import default_weight_loader


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [..., H] -> weight * x / sqrt(mean(x^2) + eps); the order of casts follows HF (normalise in float32,
    cast back to x's dtype, then scale)."""
    x32 = x.float()
    variance = x32.pow(2).mean(-1, keepdim=True)
    return weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """(rms_norm(x + residual), x + residual); the add is in the model dtype, as HF adds the residual stream."""
    x = x + residual
    return rms_norm(x, weight, eps), x



class RMSNorm(nn.Module):
    """`forward(x)` returns the normalised x. `forward(x, residual)` first adds the residual stream and returns
    `(norm(x + residual), x + residual)`: the pre-norm decoder's "add, then normalise" with the new residual."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.weight.weight_loader = default_weight_loader

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if x.is_cuda:  # one Triton kernel each; the fused form updates x and residual in place
            from llmfleet.kernels.norm import fused_add_rms_norm_triton, rms_norm_triton
            if residual is None:
                return rms_norm_triton(x, self.weight, self.eps)
            return fused_add_rms_norm_triton(x, residual, self.weight, self.eps)
        if residual is None:
            return rms_norm(x, self.weight, self.eps)
        return add_rms_norm(x, residual, self.weight, self.eps)
