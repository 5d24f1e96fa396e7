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


def demo_path(name: str) -> str | None:
    """A demo model's folder, or None when `name` is not a demo model's name (or its folder is missing)."""
    folder = DEMO_MODELS.get(name)
    return folder if folder is not None and Path(folder, "config.json").is_file() else None
