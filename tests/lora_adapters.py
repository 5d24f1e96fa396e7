"""Tiny random PEFT LoRA adapters for the tiny checkpoints (tests/checkpoints.py), made with peft itself.

`make_adapter(base, path, seed, rank, targets)` saves a PEFT folder whose A and B are both random (PEFT's own
initialisation keeps B at zero, which would make every adapter the base model), scaled so that the adapters change
greedy outputs visibly.
"""
from __future__ import annotations

import pathlib

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_adapter(base: pathlib.Path, path: pathlib.Path, *, seed: int, rank: int = 8, alpha: int = 16,
                 targets: tuple[str, ...] = ALL_TARGETS, use_rslora: bool = False) -> pathlib.Path:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                        init_lora_weights=False, use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    path = pathlib.Path(path)
    peft_model.save_pretrained(path)
    return path


def peft_model(base: pathlib.Path, adapter: pathlib.Path | None, merged: bool = False):
    """HF transformers with the adapter through PEFT (unmerged: base + B A x per layer; merged: W + s B A)."""
    from peft import PeftModel
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    if adapter is None:
        return model
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return model.merge_and_unload() if merged else model
