"""LoRA on the linear layers: per layer a stack of adapter slots, applied to each token by its adapter's slot.

`attach_lora(model, ...)` gives every adaptable linear layer (q|k|v, o, gate|up, down) a `LayerLoRA`: slot
stacks A [S, P * R, in_local] and B [S, out_local, P * R] for its P packed parts at the padded rank R, zero until
an adapter is copied in. The layer's `matmul` adds the delta after its own product (llmfleet.kernels.lora), reading
which tokens use which slot from the model's one `LoRABatch`, fixed-size device buffers refilled before every step
(so CUDA graphs replay them). Under tensor parallelism each rank keeps its slice: column-parallel layers split B's
rows like their weight, row-parallel ones split A's columns; the partial deltas of a row-parallel layer are summed
by its all-reduce with the product itself.

`pack_adapter` turns a PEFT state dict into those per-layer (A, B) pairs, B pre-scaled by alpha / r.
"""
from __future__ import annotations

import torch
from torch import nn

from llmfleet.kernels.lora import lora_delta, num_tiles
from llmfleet.model.layers.linear import LinearBase, RowParallelLinear

ADAPTABLE = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # our layer names (packed: see the model's mapping)


class LoRABatch:
    """Which tokens of the step use which slot: `order` [max_tokens] token rows grouped by slot, `starts` [S + 1]
    each group's bounds (base-model tokens are in no group), `tiles` [num_tiles, 3] the groups cut for the kernels
    (llmfleet.kernels.lora). `active` False: no token uses an adapter (eager steps then skip the kernels; a captured
    graph runs them, finding empty tiles)."""

    def __init__(self, num_slots: int, max_tokens: int, device):
        self.order = torch.zeros(max_tokens, dtype=torch.int32, device=device)
        self.starts = torch.zeros(num_slots + 1, dtype=torch.int32, device=device)
        self.tiles = torch.zeros(num_tiles(max_tokens, num_slots), 3, dtype=torch.int32, device=device)
        self.active = True


class LayerLoRA:
    """One linear layer's adapter slots (see the module docstring)."""

    def __init__(self, layer: LinearBase, num_slots: int, rank: int, batch: LoRABatch, dtype, device):
        self.parts = getattr(layer, "packed_shards", (None,))
        self.rank, self.batch = rank, batch
        width = len(self.parts) * rank
        self.a = torch.zeros(num_slots, width, layer.in_local, dtype=dtype, device=device)
        self.b = torch.zeros(num_slots, layer.out_local, width, dtype=dtype, device=device)

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [T, in_local], y [T, out_local] (the layer's product, bias included) -> y plus each token's delta."""
        if not self.batch.active:
            return y
        batch = self.batch
        return lora_delta(y, x, self.a, self.b, batch.order, batch.starts, batch.tiles)


def adaptable_layers(model: nn.Module) -> dict[str, LinearBase]:
    """Our module name -> layer, for every linear layer an adapter may target."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, LinearBase) and name.rsplit(".", 1)[-1] in ADAPTABLE}


def attach_lora(model: nn.Module, num_slots: int, rank: int, max_tokens: int, dtype, device) -> LoRABatch:
    """Gives each adaptable layer of `model` its slots; returns the step grouping they all read."""
    batch = LoRABatch(num_slots, max_tokens, device)
    for layer in adaptable_layers(model).values():
        layer.lora = LayerLoRA(layer, num_slots, rank, batch, dtype, device)
    return batch


def pack_adapter(model: nn.Module, tensors: dict[str, torch.Tensor], scale: float, dtype) -> dict:
    """PEFT tensors ("base_model.model.<module>.lora_A.weight" ...) -> our layer name -> (A [P * R, in_local],
    B [out_local, P * R]) on the CPU, B scaled. ValueError when a tensor does not fit its layer."""
    layers = adaptable_layers(model)
    mapping = getattr(model, "packed_modules_mapping", {})
    packed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key[len("base_model.model."):key.index(".lora_A.")]
        parent, leaf = module.rsplit(".", 1)
        ours, shard = mapping.get(leaf, (leaf, None))
        name = f"{parent}.{ours}"
        if name not in layers:
            raise ValueError(f"lora: {module!r} is not an adaptable layer of this model")
        layer = layers[name]
        if name not in packed:
            packed[name] = (torch.zeros_like(layer.lora.a[0], device="cpu"),
                            torch.zeros_like(layer.lora.b[0], device="cpu"))
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        _place(layer, shard, a.to(dtype), (b.float() * scale).to(dtype), *packed[name], module)
    return packed


def _place(layer: LinearBase, shard, a: torch.Tensor, b: torch.Tensor, a_out: torch.Tensor, b_out: torch.Tensor,
           module: str) -> None:
    """Writes one part's A [r, in] and B [out_part, r] into the layer's packed pair at this rank's slices."""
    lora = layer.lora
    rank, cols = a.shape[0], lora.parts.index(shard) * lora.rank
    row_parallel = isinstance(layer, RowParallelLinear)
    in_full = layer.in_local * (layer.tp_size if row_parallel else 1)
    offset, rows, _ = layer.part(shard)
    replicas = getattr(layer, "kv_replicas", 1) if shard in ("k", "v") else 1
    out_full = layer.out_local if row_parallel else rows * layer.tp_size // replicas
    if rank > lora.rank or a.shape[1] != in_full or tuple(b.shape) != (out_full, rank):
        raise ValueError(f"lora: {module!r} has A {list(a.shape)} and B {list(b.shape)}; this model needs "
                         f"[r, {in_full}] and [{out_full}, r] with r <= {lora.rank}")
    if row_parallel:
        _, a = layer.local_part(a)              # the input columns of this rank
    else:
        offset, b = layer.local_part(b, shard)  # the output rows of this rank
    a_out[cols:cols + rank].copy_(a)
    b_out[offset:offset + b.shape[0], cols:cols + rank].copy_(b)
