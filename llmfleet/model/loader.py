"""Build a model from a Hugging Face folder (config.json + safetensors), a GGUF file, or an in-memory config.

The module is created directly on the target device in the target dtype, with uninitialised weights, then the
checkpoint is copied in tensor by tensor from memory-mapped files: an 8B model never passes through CPU memory
as a whole. `load_format="dummy"` fills random weights on the device instead (benchmarks).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmfleet.model.gguf_checkpoint import find_gguf_file, iterate_gguf, load_gguf_config
from llmfleet.model.layers.quantization import linear_method_for, linear_method_scope, process_after_loading
from llmfleet.model.models.llama import head_dim_of
from llmfleet.model.models.registry import architecture_of, get_model_class
from llmfleet.model.weights import fill_dummy_weights, iterate_checkpoint, load_weights

LOAD_FORMATS = ("auto", "dummy")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model shape the engine sizes itself by (totals over all tensor-parallel ranks)."""
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    eos_token_ids: list[int]
    architecture: str

    @classmethod
    def from_hf_config(cls, hf_config, model_path: str | os.PathLike | None = None) -> "ModelInfo":
        """Shape from the config; eos ids from it and from generation_config.json in model_path, if any."""
        return cls(num_layers=hf_config.num_hidden_layers, num_heads=hf_config.num_attention_heads,
                   num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
                   head_dim=head_dim_of(hf_config), hidden_size=hf_config.hidden_size,
                   vocab_size=hf_config.vocab_size, max_position_embeddings=hf_config.max_position_embeddings,
                   eos_token_ids=_eos_token_ids(hf_config, model_path), architecture=architecture_of(hf_config))

    def kv_heads_per_rank(self, tp_size: int) -> int:
        """KV heads one rank caches: a share of them, or one replicated head when tp_size exceeds their count."""
        return max(1, self.num_kv_heads // tp_size)


def load_model(model_path: str, dtype: torch.dtype, device: str, load_format: str = "auto",
               hf_config=None, quantization: str | None = None) -> tuple[nn.Module, object, ModelInfo]:
    """Build the model of `model_path` (a local folder or GGUF file) on `device` in `dtype`; return (model,
    hf_config, info).

    hf_config: use this config instead of the checkpoint's own (with load_format="dummy" the folder need not
    exist). load_format: "auto" reads the folder's safetensors or the GGUF file's tensors, "dummy" fills random
    weights. quantization: int8 | int4 | fp8 for the linear layers (None: as the checkpoint's quantization_config
    says, else unquantized).
    """
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format: unknown value {load_format!r}; use one of {', '.join(LOAD_FORMATS)}")
    if hf_config is None:
        hf_config = load_hf_config(model_path)
    model_cls = get_model_class(architecture_of(hf_config))
    method = linear_method_for(quantization, hf_config)
    with _building_on(torch.device(device), dtype), linear_method_scope(method):
        model = model_cls(hf_config)
    if load_format == "dummy":
        fill_dummy_weights(model)
    else:
        load_weights(model, checkpoint_tensors(model_path, hf_config))
    process_after_loading(model)
    model.eval().requires_grad_(False)
    folder = model_path if model_path and Path(model_path).is_dir() else None
    return model, hf_config, ModelInfo.from_hf_config(hf_config, folder)


def checkpoint_tensors(model_path: str, hf_config):
    """(name, CPU tensor) of every tensor of the GGUF file or safetensors folder `model_path`."""
    gguf_file = find_gguf_file(model_path) if model_path else None
    if gguf_file is not None:
        return iterate_gguf(gguf_file, hf_config)
    _require_folder(model_path)
    return iterate_checkpoint(model_path)


def load_hf_config(model_path: str):
    """The config of a GGUF file, else config.json of a local folder through transformers.AutoConfig (never the
    hub)."""
    from transformers import AutoConfig
    gguf_file = find_gguf_file(model_path) if model_path else None
    if gguf_file is not None:
        return load_gguf_config(gguf_file)
    _require_folder(model_path)
    if not (Path(model_path) / "config.json").is_file():
        raise ValueError(f"model_path: no config.json in {model_path}")
    return AutoConfig.from_pretrained(model_path, local_files_only=True)


def _require_folder(model_path) -> None:
    if not model_path or not Path(model_path).is_dir():
        raise ValueError(f"model_path: {model_path!r} is not a local folder (models are never fetched from a hub)")


@contextlib.contextmanager
def _building_on(device: torch.device, dtype: torch.dtype):
    """New tensors land on `device`, floating ones in `dtype`, for the duration of the block."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def _eos_token_ids(hf_config, model_path) -> list[int]:
    ids = _as_list(getattr(hf_config, "eos_token_id", None))
    if model_path is not None:
        gen_file = Path(model_path) / "generation_config.json"
        if gen_file.is_file():
            ids += [i for i in _as_list(json.loads(gen_file.read_text()).get("eos_token_id")) if i not in ids]
    return ids


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
