"""Linear methods: how a linear layer stores its weight and multiplies by it.

A method object is in scope while a model is built (`linear_method_scope`); every linear layer built then asks it
to `create_weights` (the parameters a checkpoint fills, each with a `weight_loader`), the loader calls
`process_after_loading` once every tensor is in (quantize a float weight, repack a checkpoint's layout), and the
layer's `matmul` is the method's `apply`. Models never see which method they run with.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class LinearMethod:
    """The plain float weight: weight [out_local, in_local] in the model dtype; y = x @ weight.T + bias."""

    name = "none"

    def create_weights(self, layer: nn.Module, in_local: int, out_local: int) -> None:
        """Register on `layer` the parameters the checkpoint fills (each carrying a `weight_loader`)."""
        layer.weight = nn.Parameter(torch.empty(out_local, in_local), requires_grad=False)
        layer.weight.weight_loader = layer.weight_loader

    def process_after_loading(self, layer: nn.Module) -> None:
        """Turn the loaded parameters into what `apply` reads. Called once, after the whole checkpoint is in."""

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: [T, in_local] -> [T, out_local] in x's dtype."""
        return F.linear(x, layer.weight, bias)


class QuantizeAtLoad(LinearMethod):
    """A method that loads (or dummy-fills) the float weight like the plain one, then replaces it by a quantized
    form in `quantize(layer, weight)`; the float copy is freed layer by layer."""

    def process_after_loading(self, layer: nn.Module) -> None:
        weight = layer.weight.data
        del layer.weight
        with torch.no_grad():
            self.quantize(layer, weight)

    def quantize(self, layer: nn.Module, weight: torch.Tensor) -> None:
        """weight: [out_local, in_local] float -> buffers on `layer`."""
        raise NotImplementedError


_UNQUANTIZED = LinearMethod()
_current: list[LinearMethod] = [_UNQUANTIZED]


def current_linear_method() -> LinearMethod:
    """The method layers built now use (the plain float one outside any scope)."""
    return _current[-1]


@contextlib.contextmanager
def linear_method_scope(method: LinearMethod | None):
    """Linear layers built inside the block use `method` (None: the plain float one)."""
    _current.append(method or _UNQUANTIZED)
    try:
        yield
    finally:
        _current.pop()


def process_after_loading(model: nn.Module) -> None:
    """Let every linear layer's method finish its weights (after loading or dummy filling)."""
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            method.process_after_loading(module)
    if any(p.device.type == "cuda" for p in model.parameters()):
        torch.cuda.empty_cache()  # the freed float copies must not count as this engine's memory


def quant_buffer(layer: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Register a quantized tensor on `layer` (a buffer: it moves with the module but no checkpoint fills it)."""
    layer.register_buffer(name, tensor.contiguous(), persistent=False)
