"""`prune(model, method, out)`: 2:4 semi-structured pruning of every linear layer of the decoder blocks.

In each group of 4 consecutive input features of a weight row, the 2 weights of lowest score are zeroed:
  magnitude: score = |W|
  wanda:     score = |W| * ||X_j||_2, X_j the layer's j-th input feature over calibration tokens (Wanda, Sun et al.
             2023: a weight feeding a large activation matters more than its size alone says)
Embeddings and the LM head stay dense. The result is a normal Hugging Face folder (the model's own dtype) whose
config carries `"llmfleet_sparsity": "2:4"`: llmfleet then serves its linear layers with the sparse24 linear
method (semi-structured sparse matmuls on CUDA, model/layers/quantization/sparse24.py). prune.json records the
method, the calibration and each layer's sparsity.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from llmfleet.model.layers.quantization.sparse24 import two_four_mask

__all__ = ["METHODS", "SPARSITY_KEY", "prune", "prune_model", "two_four_mask"]
METHODS = ("magnitude", "wanda")
SPARSITY_KEY = "llmfleet_sparsity"


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The nn.Linear modules inside the decoder blocks (names containing '.layers.'): not the LM head."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in name}


@torch.no_grad()
def input_norms(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """||X_j||_2 per input feature of every prunable linear layer over the calibration token batches ([B, T])."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, layer in prunable_linears(model).items():
        def hook(_module, inputs, _output, name=name):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])   # [tokens, in]
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
        hooks.append(layer.register_forward_hook(hook))
    try:
        for ids in batches:
            model(input_ids=ids.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return {name: s.sqrt() for name, s in sums.items()}


@torch.no_grad()
def prune_model(model: nn.Module, method: str, norms: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Zero 2 of every 4 weights in place; returns each layer's fraction of zero weights."""
    if method not in METHODS:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "wanda" and not norms:
        raise ValueError("method: wanda needs calibration activations (norms)")
    zeros = {}
    for name, layer in prunable_linears(model).items():
        weight = layer.weight                                                 # [out, in]
        scores = weight.abs().float()
        if method == "wanda":
            scores = scores * norms[name].to(scores.device)[None, :]
        weight.mul_(two_four_mask(scores).to(weight.dtype))
        zeros[name] = round((weight == 0).float().mean().item(), 4)
    return zeros


def calibration_batches(tokenizer, texts: list[str], samples: int, seq_len: int) -> list[torch.Tensor]:
    """`samples` windows of `seq_len` tokens cut from the joined texts, 8 per batch."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
    windows = [ids[i * seq_len:(i + 1) * seq_len] for i in range(min(samples, len(ids) // seq_len))]
    if not windows:
        raise ValueError(f"calibration: the texts hold fewer than {seq_len} tokens")
    stacked = torch.stack(windows)
    return list(stacked.split(8))


def prune(model_path: str, method: str, out: str | Path, sparsity: str = "2:4", calibration_texts=None,
          samples: int = 64, seq_len: int = 512, device: str = "auto") -> dict:
    """Prune a Hugging Face folder into `out` (module docstring); returns the record (also out/prune.json)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if sparsity != "2:4":
        raise ValueError(f"sparsity: only '2:4' is supported, got {sparsity!r}")
    if method not in METHODS:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    dtype = _saved_dtype(model_path)
    norms, calibration = None, None
    if method == "wanda":
        if calibration_texts is None:
            from llmfleet.lifecycle.prompts import doc_sections
            calibration_texts = doc_sections(Path(__file__).resolve().parents[2])
        batches = calibration_batches(tokenizer, calibration_texts, samples, seq_len)
        norms = input_norms(model, batches)
        calibration = {"windows": sum(len(b) for b in batches), "seq_len": seq_len}
    zeros = prune_model(model, method, norms)
    model.config.update({SPARSITY_KEY: sparsity})
    out = Path(out)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {"model": str(model_path), "method": method, "sparsity": sparsity, "dtype": str(dtype).removeprefix("torch."),
              "calibration": calibration, "layers": len(zeros),
              "mean_zero_fraction": round(sum(zeros.values()) / max(len(zeros), 1), 4), "zero_fraction": zeros}
    (out / "prune.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _saved_dtype(model_path: str) -> torch.dtype:
    """The checkpoint's dtype (config torch_dtype / dtype), float32 when it names none."""
    config = json.loads(Path(model_path, "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name)
