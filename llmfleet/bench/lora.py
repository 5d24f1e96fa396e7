"""Multi-LoRA options of `llmfleet bench offline`: random PEFT adapters for the bench shape, requests spread over them.

`--lora-adapters N --lora-rank R --max-loras S`: N adapters (ids 1..N) of rank R targeting every projection
(q, k, v, o, gate, up, down); request i runs under adapter i mod N. Their weights do not change the speed, so at
most `_FOLDERS` distinct folders are written (adapter i reads folder i mod _FOLDERS): each id is still its own
adapter to the engine (its own device slot and swaps). The record reports slot loads and evictions of the timed run.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

_FOLDERS = 4
_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora-adapters", type=int, default=0, help="N random LoRA adapters; requests spread evenly")
    p.add_argument("--lora-rank", type=int, default=16, help="rank of those adapters (also max_lora_rank)")
    p.add_argument("--max-loras", type=int, default=None, help="device slots (default: N, at most 16)")


def engine_options(args: argparse.Namespace) -> dict:
    """EngineConfig fields for the LoRA flags (none without --lora-adapters)."""
    if not args.lora_adapters:
        return {}
    slots = args.max_loras or min(args.lora_adapters, 16)
    rank = max(args.lora_rank, 8)
    return dict(enable_lora=True, max_loras=slots, max_lora_rank=1 << (rank - 1).bit_length(),
                max_cpu_loras=_FOLDERS)


def make_adapters(args: argparse.Namespace, engine) -> list:
    """The LoRARequests of the run (an empty list without --lora-adapters), read into the engine's host cache
    before the timed run."""
    from llmfleet.protocol.lora import LoRARequest

    if not args.lora_adapters:
        return []
    root = tempfile.mkdtemp(prefix="bench-lora-")
    folders = [write_adapter(os.path.join(root, f"adapter-{i}"), engine.runner.hf_config, args.lora_rank, seed=i)
               for i in range(min(_FOLDERS, args.lora_adapters))]
    adapters = [LoRARequest(f"bench-lora-{i + 1}", i + 1, folders[i % len(folders)])
                for i in range(args.lora_adapters)]
    for adapter in adapters[:len(folders)]:
        engine.runner.lora.check(adapter)
    return adapters


def write_adapter(path: str, config, rank: int, seed: int, b_std: float = 0.01, dtype=None) -> str:
    """A PEFT-format folder of random rank-`rank` weights (B's entries of deviation `b_std`, bf16 unless `dtype`)
    for every projection of a Llama-family `config`."""
    import torch
    from safetensors.torch import save_file

    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    dims = dict(q_proj=(hidden, q), k_proj=(hidden, kv), v_proj=(hidden, kv), o_proj=(q, hidden),
                gate_proj=(hidden, inter), up_proj=(hidden, inter), down_proj=(inter, hidden))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for name, (fan_in, fan_out) in dims.items():
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{name}"
            a = torch.randn(rank, fan_in, generator=gen) * fan_in ** -0.5
            b = torch.randn(fan_out, rank, generator=gen) * b_std
            tensors[f"{key}.lora_A.weight"] = a.to(dtype or torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = b.to(dtype or torch.bfloat16)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(dict(peft_type="LORA", r=rank, lora_alpha=2 * rank, target_modules=list(_TARGETS),
                       bias="none", lora_dropout=0.0), f)
    return path


def snapshot(engine) -> dict:
    slots = engine.runner.lora
    if slots is None:
        return {}
    return dict(lora_slot_loads=slots.stats.slot_loads, lora_evictions=slots.stats.evictions,
                lora_host_loads=slots.stats.host_loads)


def record_fields(args: argparse.Namespace, engine, adapters: list, before: dict) -> dict:
    """The record's LoRA fields: the run's shape, and slot loads / evictions since `before` (a `snapshot`)."""
    if not adapters:
        return {}
    now = snapshot(engine)
    return dict(lora_adapters=len(adapters), lora_rank=args.lora_rank, max_loras=engine.config.max_loras,
                lora_distinct_folders=len({a.lora_path for a in adapters}),
                **{k: now[k] - before.get(k, 0) for k in now})
