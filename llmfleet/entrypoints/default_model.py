"""Which model `llmfleet serve` loads when none is named: the built-in demo model, else a tiny random one.

The demo model comes from `llmfleet.demo_models`. Where that is missing (a trimmed install), the server still
starts, on a tiny random checkpoint built once in the user's cache; it says loudly that its output is noise.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "demo"
RANDOM_MODEL_NAME = "random-tiny"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/llmfleet, else ~/.cache/llmfleet."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmfleet"


def resolve_served_model(model: str | None, cache_dir: Path | None = None) -> tuple[str, str | None]:
    """(what EngineConfig.model gets, the name to serve it under or None for the engine's own name)."""
    if model not in (None, DEFAULT_MODEL):
        return model, None
    if _demo_available():
        return DEFAULT_MODEL, DEFAULT_MODEL
    path = (cache_dir or default_cache_dir()) / RANDOM_MODEL_NAME
    if not (path / "config.json").is_file():
        from llmfleet.model.random_checkpoint import write_random_checkpoint
        write_random_checkpoint(path)
    logger.warning("*" * 100)
    logger.warning("The demo model is not installed: serving a tiny RANDOM model from %s. Its output is noise.", path)
    logger.warning("Pass --model PATH to serve a real model.")
    logger.warning("*" * 100)
    return str(path), RANDOM_MODEL_NAME


def _demo_available() -> bool:
    from llmfleet.demo_models import demo_path

    return demo_path(DEFAULT_MODEL) is not None
