"""Where a model comes from: a Hugging Face folder, a GGUF file (or a folder holding one), a built-in demo name,
or a benchmark shape (random weights).

Never reaches a hub: a name that is neither a folder, a demo model nor a shape is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from llmfleet.demo_models import demo_path
from llmfleet.model.gguf_checkpoint import find_gguf_file, load_gguf_config, load_gguf_tokenizer


# Files any Hugging Face tokenizer is loaded from; a folder with none of them has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


@dataclass(slots=True)
class ModelSource:
    path: str | None          # folder with config.json + safetensors, or a GGUF file; None for a shape
    hf_config: object | None  # set for shapes and GGUF files (read from its metadata)
    tokenizer: object | None  # None with skip_tokenizer_init
    name: str


def resolve_model(model: str, tokenizer: str | None = None, load_format: str = "auto",
                  skip_tokenizer_init: bool = False) -> ModelSource:
    from llmfleet.model.shapes import SHAPES, shape_config, synthetic_tokenizer

    if model in SHAPES:
        if load_format != "dummy":
            raise ValueError(f"model: {model!r} is a benchmark shape with no weights; use load_format='dummy'")
        config = shape_config(model)
        if skip_tokenizer_init:
            words = None
        else:  # a given tokenizer folder replaces the synthetic one (the structured-output bench needs bytes)
            words = load_tokenizer(tokenizer) if tokenizer else synthetic_tokenizer(config.vocab_size)
        return ModelSource(None, config, words, model)
    if not isinstance(model, str) or not model:
        raise ValueError(f"model: must be a non-empty string, got {model!r}")
    path = demo_path(model) or model
    gguf_file = find_gguf_file(path)
    if gguf_file is not None:
        return _gguf_source(gguf_file, tokenizer, skip_tokenizer_init, model)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"model: {model!r} is not a folder with config.json, a GGUF file, a demo model, or a benchmark shape "
                         f"({', '.join(sorted(SHAPES))})")
    return ModelSource(path, None, None if skip_tokenizer_init else load_tokenizer(tokenizer or path), model)


def _gguf_source(file, tokenizer: str | None, skip_tokenizer_init: bool, name: str) -> ModelSource:
    """A GGUF file's config and tokenizer from its metadata (or the tokenizer folder given instead)."""
    if skip_tokenizer_init:
        words = None
    else:
        words = load_tokenizer(tokenizer) if tokenizer else load_gguf_tokenizer(file)
    return ModelSource(str(file), load_gguf_config(file), words, name)


def load_tokenizer(path: str):
    """The tokenizer in folder `path`; a ValueError naming `tokenizer` when there is none or it does not load."""
    from transformers import AutoTokenizer

    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise ValueError(f"tokenizer: {path!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); give a "
                         f"tokenizer folder (tokenizer=...), or skip_tokenizer_init=True to prompt with token ids "
                         f"and get token ids back without text")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the user needs the folder and cause
        raise ValueError(f"tokenizer: the tokenizer in {path!r} does not load: {type(exc).__name__}: {exc}") from exc
