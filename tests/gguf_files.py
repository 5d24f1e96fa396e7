"""Small GGUF files written from the tiny Hugging Face checkpoints of tests/checkpoints.py, as llama.cpp would.

`write_gguf(folder, file, qtype)` stores the folder's config as GGUF metadata, its byte-level BPE tokenizer and chat
template, and every weight matrix in `qtype` (norms and biases stay F32, as llama.cpp keeps them). Where gguf-py
cannot quantize a type (the K-quants), the layers' matrices are valid random blocks of that type instead and the
embedding and output matrices Q8_0 (llama.cpp mixes types like this too); `write_gguf` returns the float weights
every tensor decodes to, so a test knows what any loader must produce.
Query and key rows of `llama`-architecture files are permuted the way llama.cpp's converter does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants
from safetensors.numpy import load_file

from llmfleet.model import gguf_checkpoint

# HF model_type -> (GGUF general.architecture, general.name); llama.cpp files Mistral under "llama".
_ARCH = {"llama": ("llama", "tiny-llama"), "mistral": ("llama", "mistral"), "qwen2": ("qwen2", "tiny-qwen2"),
         "qwen3": ("qwen3", "tiny-qwen3")}
# Our tensor names -> llama.cpp's: the loader's tables turned around (parity with transformers' own GGUF reading is
# what checks them).
_LAYER_PARTS = {ours: theirs for theirs, ours in gguf_checkpoint._LAYER_PARTS.items()}
_GLOBAL_PARTS = {ours: theirs for theirs, ours in gguf_checkpoint._GLOBAL_PARTS.items()}
# Byte offsets and sizes of the f16 scales in K-quant blocks: weights stay O(0.5), centred near 0 (Q5_K subtracts
# dmin * min from d * scale * q, q in 0..31 and scale, min in 0..63).
_K_QUANT_SCALES = {GGMLQuantizationType.Q5_K: ((0, 2.5e-4), (2, 3.9e-3)), GGMLQuantizationType.Q6_K: ((208, 1e-4),)}


def write_gguf(folder: Path, file: Path, qtype: GGMLQuantizationType, seed: int = 0) -> dict[str, np.ndarray]:
    """Write `folder`'s checkpoint to `file` with its matrices in `qtype`; return {gguf tensor name: the float32
    weights it decodes to, in llama.cpp's row order}."""
    config = json.loads((folder / "config.json").read_text())
    arch, name = _ARCH[config["model_type"]]
    writer = GGUFWriter(str(file), arch)
    writer.add_name(name)
    _add_config(writer, config, arch)
    _add_tokenizer(writer, folder)
    rng = np.random.default_rng(seed)
    decoded = {}
    for hf_name, weights in sorted(load_file(folder / "model.safetensors").items()):
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        gguf_name = gguf_tensor_name(hf_name)
        if arch == "llama" and gguf_name.split(".")[-2] in ("attn_q", "attn_k"):
            heads = config["num_attention_heads" if "attn_q" in gguf_name else "num_key_value_heads"]
            weights = permute_rows(weights, heads)
        decoded[gguf_name] = _add_tensor(writer, gguf_name, weights.astype(np.float32), qtype, rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoded


def gguf_tensor_name(hf_name: str) -> str:
    stem, _, suffix = hf_name.rpartition(".")
    if stem in _GLOBAL_PARTS:
        return f"{_GLOBAL_PARTS[stem]}.{suffix}"
    _, _, layer, part = stem.split(".", 3)
    return f"blk.{layer}.{_LAYER_PARTS[part]}.{suffix}"


def permute_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k permutation: within each head, rows (half, pairs) become (pairs, half)."""
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add_config(writer: GGUFWriter, config: dict, arch: str) -> None:
    heads = config["num_attention_heads"]
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(config["vocab_size"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_file_type(1)


def _add_tokenizer(writer: GGUFWriter, folder: Path) -> None:
    spec = json.loads((folder / "tokenizer.json").read_text())
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in spec["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    for kind in ("bos", "eos", "pad"):
        getattr(writer, f"add_{kind}_token_id")(vocab[settings[f"{kind}_token"]])
    writer.add_add_bos_token(True)
    template = folder / "chat_template.jinja"
    writer.add_chat_template(template.read_text() if template.is_file() else settings["chat_template"])


def _add_tensor(writer: GGUFWriter, name: str, weights: np.ndarray, qtype, rng) -> np.ndarray:
    """Store one tensor (matrices in qtype, the rest F32); return the float32 weights the stored data decodes to."""
    if weights.ndim == 1 or qtype == GGMLQuantizationType.F32:
        writer.add_tensor(name, weights)
        return weights
    if qtype == GGMLQuantizationType.F16:
        writer.add_tensor(name, weights.astype(np.float16))
        return weights.astype(np.float16).astype(np.float32)
    if qtype in _K_QUANT_SCALES and not name.startswith("blk."):
        qtype = GGMLQuantizationType.Q8_0
    data = random_blocks(weights.shape, qtype, rng) if qtype in _K_QUANT_SCALES else quants.quantize(weights, qtype)
    writer.add_tensor(name, data, raw_dtype=qtype)
    return quants.dequantize(data, qtype)


def random_blocks(shape: tuple[int, int], qtype, rng) -> np.ndarray:
    """Random but valid blocks of a K-quant type for a [rows, cols] matrix (cols a multiple of 256): uint8 bytes."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    if cols % block_size:
        raise ValueError(f"shape: {qtype.name} needs rows of a multiple of {block_size} values, got {cols}")
    blocks = rng.integers(0, 256, size=(rows, cols // block_size, type_size), dtype=np.uint8)
    for offset, scale in _K_QUANT_SCALES[qtype]:
        values = rng.uniform(0.5, 1.0, size=blocks.shape[:2]) * scale
        blocks[:, :, offset:offset + 2] = values.astype(np.float16)[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)

