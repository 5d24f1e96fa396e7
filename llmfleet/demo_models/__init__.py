"""The built-in demo models: a small Llama trained on the Python standard library, and its draft model.

Both folders ship inside the package (bf16 safetensors, Hugging Face layout, one shared byte-level BPE tokenizer),
so `LLM("demo")` and `llmfleet serve` work on a machine that can reach no model hub. See docs/demo_models.md for
how they were made and how well they do.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

DEMO_MODELS: dict[str, str] = {
    "demo": str(_HERE / "demo"),              # ~11.3M parameters: the target, default for `llmfleet serve`
    "demo-draft": str(_HERE / "demo-draft"),  # ~2.9M parameters: its draft for speculative decoding
}
DEFAULT_MODEL = "demo"


def resolve_model(name_or_path: str) -> str:
    """A demo model's name -> its folder; any other string (a path, a hub-style id) is returned unchanged."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"model: must be a non-empty string, got {name_or_path!r}")
    return DEMO_MODELS.get(name_or_path, name_or_path)
