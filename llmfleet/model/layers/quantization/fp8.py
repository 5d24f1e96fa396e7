"""W8A8 fp8 (e4m3): one float32 scale per output channel of the weight, one per token of the activations,
computed on the fly (dynamic); the product runs on fp8 tensor cores through torch._scaled_mm (Hopper, Ada).

Stored: weight float8_e4m3fn [out, in], weight_scale float32 [out]; w = weight * weight_scale. Sources: a 16/32-bit
checkpoint quantized at load (`Fp8QuantizeAtLoad`), or an fp8 checkpoint (`Fp8Checkpoint`: HF quant_method "fp8"
or compressed-tensors "float-quantized", tensors `weight` + `weight_scale`, per-tensor or per-channel scales; a
per-tensor scale of one packed part becomes that part's rows' scales). Elsewhere than CUDA the reference path
quantizes the activations the same way, dequantizes both and multiplies in float32.
"""
from __future__ import annotations

import torch
from torch import nn

from llmfleet.model.layers.quantization.base import LinearMethod, QuantizeAtLoad, quant_buffer

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def quantize_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scales. x [R, C] -> (float8 [R, C], float32 scales [R, 1]) with x ~= q * scale."""
    scales = (x.float().abs().amax(-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scales).clamp(-FP8_MAX, FP8_MAX).to(FP8), scales


class _Fp8Apply(LinearMethod):
    name = "fp8"

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x_q, x_scale = quantize_fp8_rows(x)                           # [T, K], [T, 1]
        if x.is_cuda:  # rowwise-scaled fp8 GEMM; it writes bf16, the bias is added after
            y = torch._scaled_mm(x_q, layer.weight.t(), scale_a=x_scale, scale_b=layer.weight_scale[None, :],
                                 out_dtype=torch.bfloat16)
            return (y if bias is None else y + bias).to(x.dtype)
        w = layer.weight.float() * layer.weight_scale[:, None]        # [N, K]
        y = (x_q.float() * x_scale) @ w.t()
        return (y if bias is None else y + bias).to(x.dtype)


class Fp8QuantizeAtLoad(_Fp8Apply, QuantizeAtLoad):
    def quantize(self, layer: nn.Module, weight: torch.Tensor) -> None:
        q, scales = quantize_fp8_rows(weight)
        quant_buffer(layer, "weight", q)
        quant_buffer(layer, "weight_scale", scales[:, 0])


class Fp8Checkpoint(_Fp8Apply):
    def create_weights(self, layer: nn.Module, in_local: int, out_local: int) -> None:
        layer.weight = nn.Parameter(torch.empty(out_local, in_local, dtype=FP8), requires_grad=False)
        layer.weight.weight_loader = layer.weight_loader
        layer.weight_scale = nn.Parameter(torch.empty(out_local, dtype=torch.float32), requires_grad=False)
        layer.weight_scale.weight_loader = lambda param, loaded, shard_id=None: self._load_scale(
            layer, param, loaded, shard_id)

    @staticmethod
    def _load_scale(layer: nn.Module, param: torch.Tensor, loaded: torch.Tensor, shard_id) -> None:
        loaded = loaded.float()
        if loaded.numel() == 1:  # per-tensor: every row of this part gets it
            offset, rows, _ = layer.part(shard_id)
            param[offset:offset + rows].fill_(loaded.item())
            return
        offset, rows, _ = layer.part(shard_id)
        _, local = layer.local_part(loaded.reshape(-1), shard_id)   # per-channel: this rank's rows
        if local.shape[0] != rows:
            raise ValueError(f"weight_scale: checkpoint {tuple(loaded.shape)} gives {local.shape[0]} rows here, "
                             f"expected {rows}")
        param[offset:offset + rows].copy_(local)
