"""W8A16: int8 weights with one float scale per output channel, quantized at load; activations stay 16-bit.

Stored K-major for the GEMM: qweight int8 [in, out], scales float32 [1, out] (one group of the whole input).
On CUDA the Triton GEMM dequantizes in its inner loop; elsewhere the weight is dequantized and multiplied (torch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.quantization.base import QuantizeAtLoad, quant_buffer


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8. weight [N, K] -> (q int8 [N, K] in [-127, 127], scales float32 [N])."""
    scales = (weight.float().abs().amax(1) / 127.0).clamp(min=1e-8)
    q = (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8WeightOnly(QuantizeAtLoad):
    name = "int8"

    def quantize(self, layer: nn.Module, weight: torch.Tensor) -> None:
        q, scales = quantize_int8(weight)
        quant_buffer(layer, "qweight", q.t())                 # [K, N]
        quant_buffer(layer, "scales", scales[None, :])        # [1, N]

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.is_cuda:
            from llmfleet.kernels.quant_matmul import quant_matmul
            y = quant_matmul(x, layer.qweight, layer.scales, None, bits=8, group_size=layer.qweight.shape[0])
            return y if bias is None else y + bias
        return F.linear(x, self.dequantize(layer).to(x.dtype), bias)

    @staticmethod
    def dequantize(layer: nn.Module) -> torch.Tensor:
        """The weight as float32 [out, in] (the reference path)."""
        return (layer.qweight.float() * layer.scales).t()
