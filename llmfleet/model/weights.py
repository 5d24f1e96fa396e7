"""Reading safetensors checkpoints (memory-mapped, single file or sharded) into a model's parameters.

Each parameter carries a `weight_loader(param, tensor, shard_id=None)` that copies its tensor-parallel slice; the
model's `packed_modules_mapping` says which checkpoint modules are parts of one packed parameter (q/k/v -> qkv).
"""
from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from llmfleet.model.layers.linear import default_weight_loader

INDEX_FILE = "model.safetensors.index.json"
PROGRESS_MIN_BYTES = 1 << 30
# Buffers some checkpoints carry that are rebuilt from the config here.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached",
                     "embeddings.position_ids")
# fp8 KV-cache scales: checkpoints keep them on the attention block, our Attention module is its `attn` child
_KV_SCALES = {".self_attn.k_scale": ".self_attn.attn.k_scale", ".self_attn.v_scale": ".self_attn.attn.v_scale"}


def safetensors_files(model_path: str | os.PathLike) -> list[Path]:
    """The checkpoint's weight files: those of the sharded index when there is one, else the *.safetensors."""
    folder = Path(model_path)
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"model_path: {INDEX_FILE} names missing files: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"model_path: no *.safetensors weights in {folder}")
    return files


def iterate_checkpoint(model_path: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every checkpoint tensor, on the CPU, memory-mapped; a progress bar when it is large."""
    files = safetensors_files(model_path)
    total = sum(f.stat().st_size for f in files)
    show = len(files) > 1 or total > PROGRESS_MIN_BYTES
    with tqdm(total=total, unit="B", unit_scale=True, desc="Loading weights", disable=not show) as bar:
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
            bar.update(file.stat().st_size)


def load_weights(model: nn.Module, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Copy checkpoint tensors into `model`; raise naming unmatched tensors and parameters left unloaded."""
    params = dict(model.named_parameters())
    mapping = getattr(model, "packed_modules_mapping", {})
    tied = getattr(model, "tied", False)
    ignored = tuple(getattr(model, "ignored_checkpoint_prefixes", ()))  # heads the model does not use
    loaded: set[tuple[str, object]] = set()
    unmatched: list[str] = []
    for name, tensor in weights:
        if name.endswith(_SKIPPED_SUFFIXES) or (tied and name == "lm_head.weight") or name.startswith(ignored):
            continue
        param_name, shard_id = map_checkpoint_name(name, mapping)
        if param_name not in params:
            unmatched.append(name)
            continue
        param = params[param_name]
        loader = getattr(param, "weight_loader", default_weight_loader)
        with torch.no_grad():
            loader(param, tensor, shard_id)
        loaded.add((param_name, shard_id))
    if unmatched:
        raise ValueError(f"checkpoint tensors that match no model parameter: {', '.join(unmatched)}")
    missing = [_describe(p, s) for p, s in expected_shards(model) if (p, s) not in loaded]
    if missing:
        raise ValueError(f"model parameters missing from the checkpoint: {', '.join(missing)}")


def map_checkpoint_name(name: str, mapping: dict) -> tuple[str, object]:
    """Checkpoint tensor name -> (parameter name, shard id or None), through the packed modules mapping.

    A module name with `*` (e.g. "experts.*.gate_proj") matches a number there, and the shard id becomes
    (that number, the entry's shard id): per-expert tensors stacked into one parameter.
    """
    for suffix, ours in _KV_SCALES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + ours, None
    for module, (packed, shard_id) in mapping.items():
        if "*" in module:
            found = _numbered(module).search(name)
            if found:
                return name[:found.start()] + f".{packed}." + name[found.end():], (int(found.group(1)), shard_id)
            continue
        part = f".{module}."
        if part in name:
            return name.replace(part, f".{packed}."), shard_id
    return name, None


@functools.lru_cache(maxsize=None)
def _numbered(module: str) -> re.Pattern:
    return re.compile(r"\." + re.escape(module).replace(r"\*", r"(\d+)") + r"\.")


def expected_shards(model: nn.Module) -> list[tuple[str, object]]:
    """Every (parameter, shard id) a complete checkpoint provides: one per packed part, else shard None."""
    expected = []
    for name, param in model.named_parameters():
        if getattr(param, "optional", False):  # e.g. KV-cache scales: 1.0 unless the checkpoint has them
            continue
        owner = model.get_submodule(name.rpartition(".")[0])
        expected += [(name, shard) for shard in getattr(owner, "packed_shards", (None,))]
    return expected


def _describe(param_name: str, shard_id) -> str:
    return param_name if shard_id is None else f"{param_name} (part {shard_id!r})"


def fill_dummy_weights(model: nn.Module, seed: int = 0) -> None:
    """Random weights for benchmarks, generated on the parameters' device: normal(0, 0.02), norm weights 1."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or getattr(param, "optional", False):
                param.fill_(1.0)
                continue
            if param.device not in generators:
                generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
            param.normal_(0.0, 0.02, generator=generators[param.device])
