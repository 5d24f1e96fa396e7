"""Gated activations of the MLP: on CUDA one Triton kernel (llmfleet.kernels.activation), else plain torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2I] holding [gate | up] -> silu(gate) * up: [..., I]."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            from llmfleet.kernels.activation import silu_and_mul_triton
            return silu_and_mul_triton(x)
        return silu_and_mul(x)
