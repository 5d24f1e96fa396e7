"""2:4 semi-structured sparse weights: in every group of 4 consecutive input features at most 2 weights are nonzero.

Chosen by `quantization="sparse24"` or by a pruned checkpoint's `"llmfleet_sparsity": "2:4"` (llmfleet prune).
The float weight loads like the plain one; after loading, each layer's weight is checked to be 2:4 (a dense
checkpoint served as sparse would silently drop half its weights) and, on CUDA in fp16/bf16 with a supported
shape, compressed by `torch.sparse.to_sparse_semi_structured` (values + metadata, half the bytes), which the
sparse tensor cores multiply. Elsewhere (CPU, float32, small or odd shapes) the layer keeps the dense masked
weight: the same product, so outputs match across devices.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.quantization.base import LinearMethod

logger = logging.getLogger(__name__)
SPARSE_DTYPES = (torch.float16, torch.bfloat16)
MIN_ROWS, COL_MULTIPLE = 32, 64  # the semi-structured kernels' shape constraints (rows and columns of the weight)


def two_four_mask(scores: torch.Tensor) -> torch.Tensor:
    """scores [out, in] (in divisible by 4) -> bool keep-mask [out, in]: the top 2 of every 4 along `in`."""
    rows, cols = scores.shape
    if cols % 4:
        raise ValueError(f"2:4 sparsity needs the input dimension divisible by 4, got {cols}")
    groups = scores.reshape(rows, cols // 4, 4)                               # [out, in/4, 4]
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(rows, cols)


def is_two_four(weight: torch.Tensor) -> bool:
    """weight [out, in]: at most 2 nonzeros in every group of 4 consecutive input features."""
    if weight.shape[-1] % 4:
        return False
    groups = weight.reshape(weight.shape[0], -1, 4)                          # [out, in/4, 4]
    return bool(((groups != 0).sum(-1) <= 2).all())


def can_compress(weight: torch.Tensor) -> bool:
    """Whether the semi-structured kernels take this weight (CUDA, fp16/bf16, shape constraints)."""
    rows, cols = weight.shape
    return (weight.is_cuda and weight.dtype in SPARSE_DTYPES and rows >= MIN_ROWS and rows % 32 == 0
            and cols % COL_MULTIPLE == 0)


class Sparse24(LinearMethod):
    """The plain float weight, checked 2:4 and compressed to a semi-structured sparse tensor where the GPU can."""

    name = "sparse24"

    def process_after_loading(self, layer: nn.Module) -> None:
        weight = layer.weight.data
        if not is_two_four(weight):
            raise ValueError(f"sparsity: a weight of shape {tuple(weight.shape)} is not 2:4 sparse; prune the "
                             f"model first (llmfleet prune --sparsity 2:4)")
        layer.sparse = False
        if can_compress(weight):
            from torch.sparse import to_sparse_semi_structured
            layer.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
            layer.sparse = True

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # x: [T, in]; a semi-structured weight pads T itself where its kernels need it
        return F.linear(x, layer.weight, bias)
