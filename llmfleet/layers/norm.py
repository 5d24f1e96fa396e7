"""RMSNorm, computed in float32 like Hugging Face's, with an optional fused residual add."""
from __future__ import annotations

import torch
from torch import nn

from llmfleet.layers.linear import default_weight_loader


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps) over the last dim; statistics in float32, output in x's dtype.

    `forward(x)` returns y. `forward(x, residual)` first adds the residual stream, `x = x + residual`, and returns
    `(norm(x), x)`: the pre-norm decoder layer's "add, then normalise" in one call, with the new residual stream.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.weight.weight_loader = default_weight_loader

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self._norm(x)
        x = x + residual  # in the model dtype, as Hugging Face adds the residual
        return self._norm(x), x

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., H]; the order of casts follows HF (normalise in float32, cast back, then scale by weight)
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(x.dtype)
