"""Gated activations of the MLP (one torch.compile'd kernel on CUDA, see layers/norm.py)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2I] holding [gate | up] -> silu(gate) * up: [..., I]."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


@functools.cache
def _compiled():
    return torch.compile(silu_and_mul, dynamic=True)


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _compiled()(x) if x.is_cuda else silu_and_mul(x)
