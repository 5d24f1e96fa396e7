"""Where a model comes from: a Hugging Face folder, a built-in demo name, or a benchmark shape (random weights).

Never reaches a hub: a name that is neither a folder, a demo model nor a shape is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from llmfleet.demo_models import demo_path


@dataclass(slots=True)
class ModelSource:
    path: str | None          # folder with config.json + safetensors; None for a shape built from config alone
    hf_config: object | None  # set for shapes
    tokenizer: object
    name: str


def resolve_model(model: str, tokenizer: str | None = None, load_format: str = "auto") -> ModelSource:
    from llmfleet.model.shapes import SHAPES, shape_config, synthetic_tokenizer

    if model in SHAPES:
        if load_format != "dummy":
            raise ValueError(f"model: {model!r} is a benchmark shape with no weights; use load_format='dummy'")
        config = shape_config(model)
        return ModelSource(None, config, synthetic_tokenizer(config.vocab_size), model)
    if not isinstance(model, str) or not model:
        raise ValueError(f"model: must be a non-empty string, got {model!r}")
    path = demo_path(model) or model
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"model: {model!r} is not a folder with config.json, a demo model, or a benchmark shape "
                         f"({', '.join(sorted(SHAPES))})")
    return ModelSource(path, None, load_tokenizer(tokenizer or path), model)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
