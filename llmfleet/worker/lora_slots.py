"""The device slot pool of LoRA adapters: which adapter is in which slot, swapped LRU from host copies.

`max_loras` slots per adaptable layer (llmfleet.model.layers.lora). Before each step `prepare` puts the step's
adapters into slots (the scheduler never runs more distinct adapters at once than there are slots), evicting the
least recently used adapters that the step does not need, then groups the step's tokens by slot for the kernels.
Adapter weights are read from their PEFT folder once and kept packed in (pinned) host memory, up to `max_cpu_loras`
folders, least recently used dropped first; a swap is a host-to-device copy queued on the stream, so it runs after
the steps already queued that still read the slot's old adapter.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from llmfleet.kernels.lora import token_tiles
from llmfleet.model.layers.lora import adaptable_layers, attach_lora, pack_adapter
from llmfleet.protocol.lora import LoRARequest, read_adapter
from llmfleet.worker.transfer import to_device

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LoRAStats:
    slot_loads: int = 0      # adapters copied into a device slot (first use or after an eviction)
    evictions: int = 0       # of those, loads that replaced another adapter
    host_loads: int = 0      # adapter folders read from disk


class LoRASlots:
    def __init__(self, model, num_slots: int, max_rank: int, max_tokens: int, max_cpu_loras: int | None,
                 dtype: torch.dtype, device: str):
        self.model, self.num_slots, self.max_rank = model, num_slots, max_rank
        self.dtype, self.device = dtype, device
        self.max_cpu_loras = max_cpu_loras
        self.batch = attach_lora(model, num_slots, max_rank, max_tokens, dtype, device)
        self.layers = adaptable_layers(model)
        self._host: OrderedDict[str, dict] = OrderedDict()   # adapter folder -> packed weights, LRU first
        self._slots: OrderedDict[int, int] = OrderedDict()   # lora id -> slot, least recently used first
        self.stats = LoRAStats()

    @property
    def device_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers.values()
                   for t in (layer.lora.a, layer.lora.b))

    def check(self, lora: LoRARequest) -> None:
        """Reads (and keeps) the adapter now: ValueError when its folder is bad or does not fit this model."""
        self._packed(lora)

    def remove(self, lora_int_id: int) -> None:
        """Frees the slot of an adapter that was unloaded (its host copy stays until evicted)."""
        self._slots.pop(lora_int_id, None)

    def prepare(self, loras: list[LoRARequest | None], num_tokens: list[int]) -> None:
        """Slots for the step's sequences (`loras[i]`: sequence i's adapter, None for the base model, computing
        `num_tokens[i]` tokens), then the token grouping the layers read."""
        slot_of = self._activate({lora.lora_int_id: lora for lora in loras if lora is not None})
        seq_slots = np.fromiter((slot_of[lora.lora_int_id] if lora is not None else -1 for lora in loras),
                                dtype=np.int64, count=len(loras))
        token_slots = np.repeat(seq_slots, num_tokens)
        rows = np.flatnonzero(token_slots >= 0)
        self.batch.active = bool(rows.size)
        if not rows.size:
            self.batch.starts.zero_()
            self.batch.tiles.zero_()
            return
        order = rows[np.argsort(token_slots[rows], kind="stable")]
        starts = np.zeros(self.num_slots + 1, dtype=np.int32)
        np.cumsum(np.bincount(token_slots[rows], minlength=self.num_slots), out=starts[1:])
        tiles = np.asarray(token_tiles(starts.tolist(), self.batch.tiles.shape[0]), dtype=np.int32)
        self.batch.order[:order.size].copy_(to_device(order.astype(np.int32), self.device))
        self.batch.starts.copy_(to_device(starts, self.device))
        self.batch.tiles.copy_(to_device(tiles, self.device))

    def _activate(self, wanted: dict[int, LoRARequest]) -> dict[int, int]:
        if len(wanted) > self.num_slots:
            raise RuntimeError(f"a step uses {len(wanted)} adapters but there are {self.num_slots} slots")
        for lora_id, lora in wanted.items():
            if lora_id in self._slots:
                self._slots.move_to_end(lora_id)
                continue
            self._load(lora, self._free_slot(wanted))
        return {lora_id: self._slots[lora_id] for lora_id in wanted}

    def _free_slot(self, wanted: dict[int, LoRARequest]) -> int:
        used = set(self._slots.values())
        free = [s for s in range(self.num_slots) if s not in used]
        if free:
            return free[0]
        victim = next(i for i in self._slots if i not in wanted)  # least recently used, not in this step
        self.stats.evictions += 1
        return self._slots.pop(victim)

    def _load(self, lora: LoRARequest, slot: int) -> None:
        packed = self._packed(lora)
        for name, layer in self.layers.items():
            if name in packed:
                a, b = packed[name]
                layer.lora.a[slot].copy_(a, non_blocking=True)
                layer.lora.b[slot].copy_(b, non_blocking=True)
            else:
                layer.lora.b[slot].zero_()   # a zero B: no delta from a layer this adapter does not target
        self._slots[lora.lora_int_id] = slot
        self.stats.slot_loads += 1

    def _packed(self, lora: LoRARequest) -> dict:
        path = lora.lora_path
        if path in self._host:
            self._host.move_to_end(path)
            return self._host[path]
        info = read_adapter(path, self.max_rank)
        from safetensors.torch import load_file
        packed = pack_adapter(self.model, load_file(info.weights_file), info.scale, self.dtype)
        if self.device.startswith("cuda"):
            packed = {name: (a.pin_memory(), b.pin_memory()) for name, (a, b) in packed.items()}
        self._host[path] = packed
        self.stats.host_loads += 1
        if self.max_cpu_loras is not None and len(self._host) > self.max_cpu_loras:
            self._host.popitem(last=False)
        logger.info("LoRA adapter %r loaded from %s (rank %d)", lora.lora_name, path, info.rank)
        return packed
