"""LoRA adapters as plain data: the request for one (`LoRARequest`) and a checked reading of a PEFT folder.

A PEFT LoRA folder holds `adapter_config.json` (rank `r`, `lora_alpha`, `target_modules`, ...) and
`adapter_model.safetensors` with, per adapted linear layer, `lora_A.weight` [r, in] and `lora_B.weight` [out, r]
(y = W x + scale * B A x, scale = alpha / r, or alpha / sqrt(r) with rsLoRA). `read_adapter` checks all of it
without torch (the safetensors header is JSON), so the API process can refuse a bad folder with a clear error
before any request reaches the engine. Adapters of one name share prefix-cache blocks (`lora_salt`): the gateway
derives the same namespace from the request's `model` field.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass

# The linear layers of the Llama family an adapter may target (attention and MLP projections).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+\.(?P<leaf>[a-z_]+))\.lora_(?P<ab>[AB])\.weight$")


@dataclass(frozen=True, slots=True)
class LoRARequest:
    """Run a request with the adapter in `lora_path`. `lora_int_id` (>= 1) identifies it in the engine: two
    requests with the same id use the same weights."""
    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise ValueError(f"lora_name: must be a non-empty string, got {self.lora_name!r}")
        if not isinstance(self.lora_int_id, int) or self.lora_int_id < 1:
            raise ValueError(f"lora_int_id: must be an integer >= 1, got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise ValueError(f"lora_path: must be a non-empty path, got {self.lora_path!r}")

    def to_wire(self) -> dict:
        return {"lora_name": self.lora_name, "lora_int_id": self.lora_int_id, "lora_path": self.lora_path}


def check_lora_request(lora_request, config, read: bool = True) -> dict | None:
    """The wire form of a request's adapter after checking its folder (unless `read` is False: checked before);
    None for the base model. ValueError naming `lora_request` when it is not a LoRARequest, when the engine (an
    EngineConfig) serves no adapters, or when its folder is bad."""
    if lora_request is None:
        return None
    if not isinstance(lora_request, LoRARequest):
        raise ValueError(f"lora_request: must be a LoRARequest, got {type(lora_request).__name__}")
    if not config.enable_lora:
        raise ValueError("lora_request: this engine serves no adapters (start it with enable_lora=True)")
    if read:
        read_adapter(lora_request.lora_path, config.max_lora_rank)
    return lora_request.to_wire()


def parse_lora_modules(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`--lora-modules name=path ...` -> ((name, path), ...); ValueError naming lora_modules for a bad entry."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"lora_modules: {value!r} must be NAME=PATH")
        if name in pairs:
            raise ValueError(f"lora_modules: the name {name!r} is given twice")
        pairs[name] = path
    return tuple(pairs.items())


def lora_salt(name: str) -> str:
    """The prefix-cache namespace of an adapter's requests (base-model requests use none)."""
    return f"lora:{name}"


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """What `read_adapter` found: rank, the scale of B A, and per module key (PEFT's name, e.g.
    "model.layers.0.self_attn.q_proj") the shapes of its A and B."""
    rank: int
    scale: float
    modules: dict[str, tuple[tuple[int, int], tuple[int, int]]]
    weights_file: str


def read_adapter(path: str, max_rank: int | None = None) -> AdapterInfo:
    """Checks a PEFT LoRA folder; ValueError naming what is wrong (missing files, unsupported options, shapes)."""
    config = _read_config(path)
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora: adapter_config.json in {path!r} has no valid rank 'r' (got {rank!r})")
    if max_rank is not None and rank > max_rank:
        raise ValueError(f"lora: adapter rank {rank} exceeds max_lora_rank={max_rank} ({path!r})")
    if not isinstance(alpha, (int, float)):
        raise ValueError(f"lora: lora_alpha must be a number, got {alpha!r} ({path!r})")
    _check_options(config, path)
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    weights = os.path.join(path, "adapter_model.safetensors")
    modules = _modules_of(_safetensors_header(weights), rank, path)
    return AdapterInfo(rank, float(scale), modules, weights)


def _read_config(path: str) -> dict:
    file = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(file):
        raise ValueError(f"lora: no adapter_config.json in {path!r} (a PEFT LoRA folder is expected)")
    try:
        with open(file) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"lora: adapter_config.json in {path!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"lora: adapter_config.json in {path!r} must hold an object")
    return config


def _check_options(config: dict, path: str) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"lora: peft_type must be LORA, got {config.get('peft_type')!r} ({path!r})")
    if config.get("bias", "none") != "none":
        raise ValueError(f"lora: bias={config['bias']!r} is not supported, only 'none' ({path!r})")
    for option in ("use_dora", "fan_in_fan_out"):
        if config.get(option):
            raise ValueError(f"lora: {option}=true is not supported ({path!r})")
    for option in ("modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform"):
        if config.get(option):
            raise ValueError(f"lora: {option} is not supported ({path!r})")


def _safetensors_header(file: str) -> dict:
    if not os.path.isfile(file):
        raise ValueError(f"lora: {file!r} is missing (adapter weights are read from adapter_model.safetensors)")
    try:
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 1 << 28:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as exc:
        raise ValueError(f"lora: {file!r} is not a safetensors file: {exc}") from None
    header.pop("__metadata__", None)
    return header


def _modules_of(header: dict, rank: int, path: str) -> dict:
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for key, entry in header.items():
        match = _KEY.match(key)
        if match is None or match["leaf"] not in TARGET_MODULES:
            raise ValueError(f"lora: unsupported tensor {key!r} in {path!r}; adapters may target only "
                             f"{', '.join(TARGET_MODULES)}")
        shape = tuple(entry.get("shape", ()))
        if len(shape) != 2 or (shape[0] if match["ab"] == "A" else shape[1]) != rank:
            raise ValueError(f"lora: {key!r} has shape {list(shape)}, not rank {rank} ({path!r})")
        found.setdefault(match["module"], {})[match["ab"]] = shape
    if not found:
        raise ValueError(f"lora: no LoRA tensors in {path!r}")
    for module, pair in found.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"lora: {module!r} needs both lora_A and lora_B ({path!r})")
    return {m: (p["A"], p["B"]) for m, p in found.items()}
