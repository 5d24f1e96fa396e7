"""W7 editing: 64 requests, each a ~400-token source file of llmfleet itself and an instruction to return it with
one small change. The answer mostly repeats the prompt, which is where n-gram speculation pays.

Deterministic without drawing anything: the package's own .py files in sorted order (those with a top-level
function and at least 1,050 characters), each cut to its first ~1,400 characters at a line end; the change asked
for is renaming the file's first top-level function to `<name>_renamed`. Real weights only (the prompt is text).
"""
from __future__ import annotations

import re
from pathlib import Path

NUM_REQUESTS = 64
SOURCE_CHARS = 1400           # ~400 tokens of Python for SmolLM2's tokenizer (345-648 at 1,600)
OUTPUT_TOKENS = 512           # room for the whole file back; generation stops at EOS
_FIRST_DEF = re.compile(r"^def ([A-Za-z_][A-Za-z0-9_]*)\(", re.MULTILINE)


def editing_prompts(root: Path | None = None) -> list[str]:
    """The 64 prompts of W7, in order (a user message: instruction, then the file)."""
    root = root or Path(__file__).resolve().parents[1]
    prompts = []
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        source = _head(path.read_text(encoding="utf-8"))
        match = _FIRST_DEF.search(source)
        if match is None or len(source) < SOURCE_CHARS * 3 // 4:
            continue
        name = match.group(1)
        prompts.append(f"Here is a Python file, {path.relative_to(root).as_posix()}. Return the whole file "
                       f"unchanged except that the function `{name}` is renamed to `{name}_renamed` everywhere. "
                       f"Answer with the file only.\n\n```python\n{source}```\n")
        if len(prompts) == NUM_REQUESTS:
            return prompts
    raise RuntimeError(f"W7: only {len(prompts)} source files qualify under {root}")


def _head(text: str) -> str:
    """The text's first SOURCE_CHARS characters, cut back to a line end."""
    if len(text) <= SOURCE_CHARS:
        return text if text.endswith("\n") else text + "\n"
    cut = text.rfind("\n", 0, SOURCE_CHARS)
    return text[:cut + 1]
