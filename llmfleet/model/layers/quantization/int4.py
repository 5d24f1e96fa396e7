"""W4A16: 4-bit weights in groups of `group_size` inputs with a scale and an integer zero point per group
(asymmetric); activations stay 16-bit.

Every int4 layer ends in one form, whatever it was loaded from: qweight int32 [in / 8, out] (packing.py, K-major),
scales and qzeros float32 [in / G, out]; w = (q - zero) * scale. On CUDA the Triton GEMM (kernels/quant_matmul.py)
dequantizes in its inner loop; elsewhere the weight is dequantized and multiplied in torch (the reference path).

Sources: a float checkpoint quantized at load (`Int4QuantizeAtLoad`), or a GPTQ / AWQ checkpoint whose tensors
(qweight, qzeros, scales, and GPTQ's g_idx) are unpacked to [out, in]-oriented integers, sharded like a float
weight by the layer's `local_part`, and repacked (`Int4Checkpoint`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.quantization import packing
from llmfleet.model.layers.quantization.base import LinearMethod, QuantizeAtLoad, quant_buffer

DEFAULT_GROUP_SIZE = 128


class _Int4Apply(LinearMethod):
    name = "int4"

    def __init__(self, group_size: int = DEFAULT_GROUP_SIZE):
        if group_size < 16 or group_size % 16:
            raise ValueError(f"group_size: must be a positive multiple of 16, got {group_size}")
        self.group_size = group_size

    def check_shape(self, in_local: int, out_local: int) -> None:
        if in_local % self.group_size:
            raise ValueError(f"quantization: int4 needs in_features divisible by the group size {self.group_size}; "
                             f"this layer has {in_local} inputs per rank")

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.is_cuda:
            from llmfleet.kernels.quant_matmul import quant_matmul
            group = layer.qweight.shape[0] * 8 // layer.scales.shape[0]   # the layer's own (see group_for)
            y = quant_matmul(x, layer.qweight, layer.scales, layer.qzeros, bits=4, group_size=group)
            return y if bias is None else y + bias
        return F.linear(x, self.dequantize(layer).to(x.dtype), bias)

    @staticmethod
    def dequantize(layer: nn.Module) -> torch.Tensor:
        """The weight as float32 [out, in] (the reference path)."""
        q = packing.unpack_rows(layer.qweight).t()
        return packing.dequantize_int4(q, layer.scales.t(), layer.qzeros.t())


class Int4QuantizeAtLoad(_Int4Apply, QuantizeAtLoad):
    """Quantizes a float (bf16 / fp16 / fp32) checkpoint's weight per group at load. A layer whose inputs the
    group size does not divide (SmolLM2's 576, say, with 128) takes the largest smaller multiple of 16 that does,
    halving from the configured size: finer groups, a little more scale memory, never a refused model."""

    def group_for(self, in_local: int) -> int:
        group = self.group_size
        while in_local % group and group % 32 == 0:
            group //= 2
        return group

    def create_weights(self, layer: nn.Module, in_local: int, out_local: int) -> None:
        if in_local % self.group_for(in_local):
            raise ValueError(f"quantization: int4 needs in_features divisible by 16; this layer has {in_local} "
                             f"inputs per rank")
        super().create_weights(layer, in_local, out_local)

    def quantize(self, layer: nn.Module, weight: torch.Tensor) -> None:
        q, scales, zeros = packing.quantize_int4(weight, self.group_for(weight.shape[1]))
        quant_buffer(layer, "qweight", packing.pack_rows(q.t()))    # [K/8, N]
        quant_buffer(layer, "scales", scales.t())                   # [K/G, N]
        quant_buffer(layer, "qzeros", zeros.t())


class Int4Checkpoint(_Int4Apply):
    """Reads a GPTQ (`layout="gptq"`) or AWQ (`layout="awq"`) checkpoint's 4-bit tensors."""

    def __init__(self, layout: str, group_size: int = DEFAULT_GROUP_SIZE):
        if layout not in ("gptq", "awq"):
            raise ValueError(f"quantization_config.quant_method: int4 reads 'gptq' or 'awq', got {layout!r}")
        super().__init__(group_size)
        self.layout = layout

    def create_weights(self, layer: nn.Module, in_local: int, out_local: int) -> None:
        self.check_shape(in_local, out_local)
        groups = in_local // self.group_size
        tensors = dict(qweight=torch.empty(in_local // 8, out_local, dtype=torch.int32),
                       scales=torch.empty(groups, out_local, dtype=torch.float32),
                       qzeros=torch.empty(groups, out_local, dtype=torch.float32))
        if self.layout == "gptq":
            tensors["g_idx"] = torch.empty(in_local, dtype=torch.int32)
        for name, tensor in tensors.items():
            param = nn.Parameter(tensor, requires_grad=False)
            param.weight_loader = self._loader(layer, name)
            setattr(layer, name, param)

    def _loader(self, layer: nn.Module, name: str):
        if name == "g_idx":
            return lambda param, loaded, shard_id=None: self._check_g_idx(param, loaded)
        to_out_in = getattr(self, "_scales" if name == "scales" else f"_{name}_{self.layout}")

        def load(param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
            offset, local = layer.local_part(to_out_in(loaded), shard_id)   # [rows, in_local or groups]
            if local.shape[1] != param.shape[0] * (8 if name == "qweight" else 1):
                raise ValueError(f"{name}: checkpoint shard {tuple(local.shape)} does not fit {tuple(param.shape)}"
                                 f" (group_size {self.group_size})")
            packed = packing.pack_rows(local.t()) if name == "qweight" else local.t()
            param[:, offset:offset + local.shape[0]].copy_(packed)
        return load

    # Each checkpoint tensor -> integers or floats oriented [out, in] (or [out, groups]).
    @staticmethod
    def _qweight_gptq(t):
        return packing.unpack_rows(t).t()

    @staticmethod
    def _qweight_awq(t):
        return packing.unpack_cols(t, packing.AWQ_ORDER).t()

    @staticmethod
    def _qzeros_gptq(t):
        return (packing.unpack_cols(t).float() + 1).t()

    @staticmethod
    def _qzeros_awq(t):
        return packing.unpack_cols(t, packing.AWQ_ORDER).float().t()

    @staticmethod
    def _scales(t):
        return t.float().t()

    def _check_g_idx(self, param: torch.Tensor, loaded: torch.Tensor) -> None:
        """Only the ordered grouping (input k in group k // G) is supported: act-order checkpoints are refused."""
        expected = torch.arange(loaded.numel(), device=loaded.device) // self.group_size
        if not torch.equal(loaded.long(), expected):
            raise ValueError("g_idx: act-order (desc_act=true) GPTQ checkpoints are not supported")
        param.copy_(torch.arange(param.numel(), device=param.device) // self.group_size)
