"""Reading GGUF checkpoints (llama.cpp's single-file format): config, tokenizer and dequantized tensors.

The config and tokenizer (with its chat template) come from the file's metadata through transformers' GGUF support;
the tensors are read with the `gguf` package and dequantized to float32 at load, any type `gguf.dequantize`
knows (F32, F16, BF16, Q8_0, Q4_0, Q4_1, the K-quants, ...). llama.cpp's tensor names are mapped to the Hugging
Face names the models' weight loaders expect, and the row permutation that llama.cpp's converter applies to the
query and key projections of `llama`-architecture files (Llama and Mistral) is undone, as transformers does:
full float tensors then go through each parameter's `weight_loader`, so tensor parallelism works unchanged.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

GGUF_SUFFIX = ".gguf"
# transformers' model_type for a GGUF file -> our architecture name.
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}
# Per-layer tensor names: llama.cpp's `blk.N.<part>` -> ours `model.layers.N.<part>`.
_LAYER_PARTS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                "attn_k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
                "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_GLOBAL_PARTS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Tensors rebuilt from the config here (llama.cpp stores Llama 3's rope frequency factors as a tensor).
_SKIPPED_PARTS = ("rope_freqs",)
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# End-of-turn markers: when the chat template writes one of them, generation stops on it.
_TURN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def find_gguf_file(path: str | os.PathLike) -> Path | None:
    """The GGUF file `path` names: a *.gguf file, or a folder without config.json holding exactly one; else None."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == GGUF_SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    files = sorted(path.glob(f"*{GGUF_SUFFIX}"))
    if len(files) > 1:
        raise ValueError(f"model: {str(path)!r} holds several GGUF files ({', '.join(f.name for f in files)}); "
                         f"name one of them")
    return files[0] if files else None


def load_gguf_config(file: str | os.PathLike):
    """The transformers config of a GGUF file, with `architectures` set and eos ids that end a chat turn."""
    from transformers import AutoConfig

    file = Path(file)
    config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True)
    if config.model_type not in _ARCHITECTURES:
        raise ValueError(f"model: GGUF architecture {config.model_type!r} of {file} is not supported; supported: "
                         f"{', '.join(sorted(_ARCHITECTURES))}")
    config.architectures = [_ARCHITECTURES[config.model_type]]
    metadata = GGUFMetadata(file)
    head_dim = metadata.get(f"{metadata.architecture}.attention.key_length")
    if head_dim is not None:  # Qwen3's heads are not hidden_size / num_heads wide; transformers misses this key
        config.head_dim = int(head_dim)
    config.eos_token_id = metadata.eos_token_ids()
    return config


def load_gguf_tokenizer(file: str | os.PathLike):
    """The tokenizer (and chat template) stored in a GGUF file; a ValueError naming `tokenizer` if it fails."""
    from transformers import AutoTokenizer

    file = Path(file)
    try:
        return AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the user needs the file and cause
        raise ValueError(f"tokenizer: the tokenizer in {str(file)!r} does not load: "
                         f"{type(exc).__name__}: {exc}") from exc


class GGUFMetadata:
    """The key-value metadata of a GGUF file (read lazily, memory-mapped) and the tensors beside it."""

    def __init__(self, file: str | os.PathLike):
        from gguf import GGUFReader

        self.reader = GGUFReader(str(file))
        self.architecture = self.get("general.architecture")

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def eos_token_ids(self) -> list[int]:
        """End-of-sequence and end-of-turn ids: the metadata's, then the chat template's turn-end marker."""
        ids = [int(self.get(f"tokenizer.ggml.{kind}_token_id")) for kind in ("eos", "eot", "eom")
               if self.get(f"tokenizer.ggml.{kind}_token_id") is not None]
        template = self.get("tokenizer.chat_template") or ""
        tokens = self.get("tokenizer.ggml.tokens") or []
        markers = {marker for marker in _TURN_END_MARKERS if marker in template}
        ids += [i for i, token in enumerate(tokens) if token in markers]
        return list(dict.fromkeys(ids))


def iterate_gguf(file: str | os.PathLike, hf_config) -> Iterator[tuple[str, "torch.Tensor"]]:
    """(our tensor name, float32 CPU tensor) of every tensor in a GGUF file, dequantized, q/k permutation undone."""
    # Imported here: the API process reads GGUF tokenizers through this module and needs no torch for that.
    import numpy as np
    import torch
    from gguf import dequantize

    metadata = GGUFMetadata(file)
    permuted = metadata.architecture == "llama"
    for tensor in metadata.reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name is None:
            continue
        weights = dequantize(tensor.data, tensor.tensor_type)  # [out, in] (GGUF lists dims innermost first)
        if permuted and ".self_attn.q_proj." in name:
            weights = unpermute_rows(weights, hf_config.num_attention_heads)
        elif permuted and ".self_attn.k_proj." in name:
            weights = unpermute_rows(weights, hf_config.num_key_value_heads)
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        # F32 tensors come back as read-only views of the memory-mapped file: copy those, torch wants to own them.
        yield name, torch.from_numpy(weights if weights.flags.writeable else weights.copy())


def hf_tensor_name(gguf_name: str) -> str | None:
    """llama.cpp's tensor name -> ours; None for tensors rebuilt from the config; ValueError for unknown ones."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_PARTS:
        return f"{_GLOBAL_PARTS[stem]}.{suffix}"
    if stem in _SKIPPED_PARTS:
        return None
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_PARTS:
        raise ValueError(f"model: GGUF tensor {gguf_name!r} has no counterpart in the supported models")
    layer, part, suffix = match.groups()
    return f"model.layers.{layer}.{_LAYER_PARTS[part]}.{suffix}"


def unpermute_rows(weights: "np.ndarray", num_heads: int) -> "np.ndarray":
    """Undo llama.cpp's q/k permutation: within each head, rows (pairs, half) go back to (half, pairs).

    llama.cpp interleaves the two rotary halves of every head (its rope rotates adjacent pairs); the models here
    rotate halves, as Hugging Face checkpoints are laid out. weights: [num_heads * head_dim, ...].
    """
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
