"""`export_onnx(model_path, out_dir)`: model.onnx (+ model.int8.onnx), export.json and vocab.json in out_dir.

The graph comes from torch's TorchScript exporter (`dynamo=False`), which needs only `onnx` (the dynamo exporter
would add `onnxscript`). Every batch and sequence axis is dynamic. int8 is onnxruntime's dynamic quantization of
the MatMul weights (activations quantized per call), which suits CPU inference of small models.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llmfleet.export.decoder import KVCacheDecoder, io_names

logger = logging.getLogger(__name__)

OPSET = 17
MODEL_FILE, INT8_FILE, META_FILE, VOCAB_FILE = "model.onnx", "model.int8.onnx", "export.json", "vocab.json"


def export_onnx(model_path: str, out_dir: str | Path, int8: bool = True) -> Path:
    """Export the Llama-family checkpoint at `model_path` (an HF folder or GGUF file) into `out_dir`."""
    from llmfleet.model.loader import load_model

    out = Path(out_dir)
    model, hf_config, info = load_model(model_path, torch.float32, "cpu")
    if getattr(hf_config, "quantization_config", None):
        raise ValueError(f"model_path: {model_path} is a quantized checkpoint; export a float one (int8 comes after)")
    out.mkdir(parents=True, exist_ok=True)
    decoder = KVCacheDecoder(model).eval()
    inputs, outputs = io_names(decoder.num_layers)
    with torch.no_grad():
        torch.onnx.export(decoder, _example_inputs(decoder), str(out / MODEL_FILE), input_names=inputs,
                          output_names=outputs, dynamic_axes=_dynamic_axes(inputs, outputs), opset_version=OPSET,
                          dynamo=False)
    meta = {"num_layers": decoder.num_layers, "num_kv_heads": decoder.num_kv_heads, "head_dim": decoder.head_dim,
            "vocab_size": info.vocab_size, "eos_token_ids": info.eos_token_ids, "inputs": inputs,
            "outputs": outputs, "opset": OPSET, "source": str(model_path), "files": [MODEL_FILE]}
    if int8:
        quantize_int8(out / MODEL_FILE, out / INT8_FILE)
        meta["files"].append(INT8_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    _write_vocab(model_path, info.vocab_size, out / VOCAB_FILE)
    return out


def quantize_int8(src: Path, dst: Path) -> Path:
    """onnxruntime's dynamic int8 quantization of the MatMul weights of `src` into `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return dst


def _example_inputs(decoder: KVCacheDecoder) -> tuple:
    """A batch of 1 with 3 new tokens after 2 cached ones: every dynamic axis has a size of its own (no 1s that
    the tracer could specialise, no two axes of one size)."""
    batch, seq, past = 2, 3, 5
    cache = [torch.zeros(batch, decoder.num_kv_heads, past, decoder.head_dim) for _ in range(2 * decoder.num_layers)]
    return (torch.ones(batch, seq, dtype=torch.long), torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).repeat(batch, 1), *cache)


def _dynamic_axes(inputs: list[str], outputs: list[str]) -> dict:
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({name: {0: "batch", 2: "past"} for name in inputs[3:]})
    axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    return axes


def _write_vocab(model_path: str, vocab_size: int, dst: Path) -> None:
    """id -> decoded text of that one token (what the browser page prints), when the folder has a tokenizer."""
    try:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        logger.warning("no tokenizer in %s (%s): the page will show token ids only", model_path, exc)
        return
    size = min(vocab_size, len(tokenizer))
    dst.write_text(json.dumps([tokenizer.decode([i]) for i in range(size)]))
