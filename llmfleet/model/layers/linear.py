"""Linear layers sharded for tensor parallelism; each parameter loads its own shard from a full checkpoint tensor.

Column-parallel layers split the output features across ranks (no communication: each rank keeps its slice of the
activations); row-parallel layers split the input features and sum the partial products with an all-reduce.
Parameters carry `weight_loader(param, loaded, shard_id=None)`: `loaded` is the full, unsharded checkpoint tensor
(of the whole layer, or of one packed part when `shard_id` names it) and the loader copies this rank's slice.

Weights are created uninitialised on the current default device and dtype: the loader (or the dummy filler)
writes every element, and building an 8B model costs no init time. What a layer stores and how it multiplies is its
linear method's (llmfleet.model.layers.quantization): the method in scope when the layer is built creates the
parameters, turns them into their final form after loading, and applies them in `matmul`. Each layer says where a
checkpoint tensor oriented [out, in] lands on this rank (`local_part`), so a quantized method shards its own
tensors (scales, packed weights) with the same arithmetic as the float weight.
"""
from __future__ import annotations

import torch
from torch import nn

from llmfleet.model.layers.quantization.base import current_linear_method
from llmfleet.model.parallel_state import get_tp_rank, get_tp_size, tp_all_gather, tp_all_reduce


def default_weight_loader(param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
    """Copy a replicated (unsharded) tensor whole."""
    if shard_id is not None:
        raise ValueError(f"shard_id: this parameter is not packed, got {shard_id!r}")
    _checked_copy(param, loaded)


def _checked_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"weight shape mismatch: parameter slice {tuple(dst.shape)} vs checkpoint {tuple(src.shape)}")
    dst.copy_(src)


def divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise ValueError(f"{what}: {total} is not divisible by the tensor-parallel size {parts}")
    return total // parts


class LinearBase(nn.Module):
    """y = x @ W.T + bias for W [out_local, in_local]; how W is stored is the linear method's (`quant_method`).

    Subclasses define `part(shard_id) -> (row offset here, rows, index of the source block)` for the output axis,
    and may override `local_part` for the input axis (row-parallel layers).
    """

    def __init__(self, in_local: int, out_local: int, bias: bool):
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.in_local, self.out_local = in_local, out_local
        self.quant_method = current_linear_method()
        self.quant_method.create_weights(self, in_local, out_local)
        self.lora = None  # a LayerLoRA when adapters are served (llmfleet.model.layers.lora): adds their deltas
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_local), requires_grad=False)
            self.bias.weight_loader = self.weight_loader

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: [T, in_local] -> [T, out_local]. The only place the weight is applied (the linear method's)."""
        y = self.quant_method.apply(self, x, bias)
        return y if self.lora is None else self.lora.apply(x, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.bias)

    def part(self, shard_id=None) -> tuple[int, int, int]:
        """(row offset in this rank's output, rows, which `rows`-sized block of the checkpoint tensor)."""
        if shard_id is not None:
            raise ValueError(f"shard_id: this parameter is not packed, got {shard_id!r}")
        return 0, self.out_local, 0

    def local_part(self, loaded: torch.Tensor, shard_id=None) -> tuple[int, torch.Tensor]:
        """(row offset, this rank's slice) of a checkpoint tensor oriented [out, ...] (a weight, bias or scales)."""
        offset, rows, block = self.part(shard_id)
        return offset, loaded.narrow(0, block * rows, rows)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        """Copy this rank's slice of `loaded` (the whole layer's, or one packed part's) into `param`."""
        offset, local = self.local_part(loaded, shard_id)
        _checked_copy(param.narrow(0, offset, local.shape[0]), local)


class ColumnParallelLinear(LinearBase):
    """Output features split across ranks: rank r holds rows [r*out/tp, (r+1)*out/tp) of the weight."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, gather_output: bool = False):
        out_local = divide(output_size, get_tp_size(), "output_size")
        super().__init__(input_size, out_local, bias)
        self.gather_output = gather_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x, self.bias)
        return tp_all_gather(y) if self.gather_output else y

    def part(self, shard_id=None) -> tuple[int, int, int]:
        if shard_id is not None:
            raise ValueError(f"shard_id: this parameter is not packed, got {shard_id!r}")
        return 0, self.out_local, self.tp_rank


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel layers of one input in one matmul (e.g. gate and up). Shards are 0, 1, ...

    Rank r's weight is [part0's r-th slice; part1's r-th slice; ...], so that the local output splits into the
    parts at out_local offsets, the same on every rank.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False):
        tp = get_tp_size()
        self.output_sizes = list(output_sizes)
        self.local_sizes = [divide(size, tp, "output_sizes") for size in output_sizes]
        super().__init__(input_size, sum(output_sizes), bias)
        self.packed_shards = tuple(range(len(output_sizes)))

    def part(self, shard_id=None) -> tuple[int, int, int]:
        if shard_id not in self.packed_shards:
            raise ValueError(f"shard_id: must be one of {self.packed_shards} for a merged layer, got {shard_id!r}")
        return sum(self.local_sizes[:shard_id]), self.local_sizes[shard_id], self.tp_rank


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections in one matmul; heads split across ranks. Shards are "q", "k", "v".

    When the tensor-parallel size exceeds the KV head count, each KV head is replicated on tp / num_kv_heads ranks.
    Local output: [q heads of this rank | its kv heads (k) | the same kv heads (v)], each head head_size wide.
    """

    def __init__(self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool = False):
        tp = get_tp_size()
        self.head_size = head_size
        self.num_heads = divide(total_num_heads, tp, "num_attention_heads")
        if tp >= total_num_kv_heads:
            divide(tp, total_num_kv_heads, "num_key_value_heads (replicated)")
            self.num_kv_heads, self.kv_replicas = 1, tp // total_num_kv_heads
        else:
            self.num_kv_heads = divide(total_num_kv_heads, tp, "num_key_value_heads")
            self.kv_replicas = 1
        local_out = (self.num_heads + 2 * self.num_kv_heads) * head_size
        super().__init__(hidden_size, local_out * tp, bias)
        self.packed_shards = ("q", "k", "v")

    def part(self, shard_id=None) -> tuple[int, int, int]:
        q_size, kv_size = self.num_heads * self.head_size, self.num_kv_heads * self.head_size
        if shard_id == "q":
            return 0, q_size, self.tp_rank
        if shard_id in ("k", "v"):
            offset = q_size if shard_id == "k" else q_size + kv_size
            return offset, kv_size, self.tp_rank // self.kv_replicas
        raise ValueError(f"shard_id: must be one of 'q', 'k', 'v' for a qkv layer, got {shard_id!r}")


class RowParallelLinear(LinearBase):
    """Input features split across ranks; partial products are summed over the group (all-reduce).

    The bias is added once: by rank 0 before the reduce (tp > 1), or directly (tp == 1).
    """

    def __init__(self, input_size: int, output_size: int, bias: bool = False, reduce_results: bool = True):
        in_local = divide(input_size, get_tp_size(), "input_size")
        super().__init__(in_local, output_size, bias)
        self.reduce_results = reduce_results

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, in_local] -> [T, out]
        bias = self.bias if self.tp_rank == 0 else None
        y = self.matmul(x, bias)
        return tp_all_reduce(y) if self.reduce_results else y

    def local_part(self, loaded: torch.Tensor, shard_id=None) -> tuple[int, torch.Tensor]:
        """The output axis is whole here; a 2-D tensor [out, in_any] is split along its input axis (the weight's
        columns, or its groups' scales), a 1-D one (the bias, per-channel scales) is replicated."""
        offset, _, _ = self.part(shard_id)
        if loaded.dim() == 1:
            return offset, loaded
        cols = divide(loaded.shape[1], self.tp_size, "input_size")
        return offset, loaded.narrow(1, self.tp_rank * cols, cols)
