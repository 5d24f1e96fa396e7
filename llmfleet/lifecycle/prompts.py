"""Prompts for distillation built from this repository (docs, source code, the stdlib corpus, the workloads).

`repo_prompts(root, count)` returns a deterministic list of chat prompts: instructions about documentation
sections, Python functions and standard-library files, plus token-id prompts shaped like the benchmark
workloads' (random ids, for the single-stream runs a draft is measured on). Each prompt is a dict with either
"messages" (a chat) or "prompt_token_ids" and, for the latter, "ignore_eos" (the workloads ignore EOS) and
"max_tokens" (RANDOM_ID_ANSWER: long answers, as W0's 512-token ones run on past where chat answers stop).
"""
from __future__ import annotations

import ast
import random
from pathlib import Path

DOC_TASKS = ("Summarise this section of the llmfleet documentation in a few sentences:\n\n{}",
             "Explain the following documentation to a new user, with an example:\n\n{}",
             "List the key points of this text as bullet points:\n\n{}")
CODE_TASKS = ("Explain what this Python function does:\n\n```python\n{}\n```",
              "Write a short docstring for this function:\n\n```python\n{}\n```",
              "Suggest one improvement to this code and show the changed code:\n\n```python\n{}\n```",
              "Write a unit test for this function:\n\n```python\n{}\n```")
MAX_CHARS = 1500
RANDOM_ID_LIMIT = 10_000  # the workloads draw ids in [0, 10000)
RANDOM_ID_ANSWER = 384


def doc_sections(root: Path) -> list[str]:
    """Markdown sections (split at headings) of docs/ and the README, each at most MAX_CHARS long."""
    sections = []
    for path in sorted((root / "docs").rglob("*.md")) + [root / "README.md"]:
        if not path.is_file():
            continue
        current: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("#") and current:
                sections.append("\n".join(current).strip())
                current = []
            current.append(line)
        sections.append("\n".join(current).strip())
    return [s[:MAX_CHARS] for s in sections if len(s) > 200]


def python_functions(paths: list[Path]) -> list[str]:
    """Source of the top-level functions and methods in `paths` (10 to 60 lines each)."""
    found = []
    for path in paths:
        text = path.read_text(errors="replace")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and 10 <= node.end_lineno - node.lineno <= 60:
                found.append("\n".join(lines[node.lineno - 1:node.end_lineno])[:MAX_CHARS])
    return found


def repo_prompts(root: str | Path, count: int = 3000, random_id_prompts: int | None = None, seed: int = 1) -> list[dict]:
    """`count` chat prompts plus `random_id_prompts` (default count // 15) token-id prompts of 128 ids (seed 1:
    not W0's own prompt)."""
    if random_id_prompts is None:
        random_id_prompts = count // 15
    root = Path(root)
    rng = random.Random(seed)
    sources = [(DOC_TASKS, doc_sections(root)),
               (CODE_TASKS, python_functions(sorted((root / "llmfleet").rglob("*.py")))),
               (CODE_TASKS, python_functions(_stdlib_files(rng)))]
    chats = [task.format(text) for tasks, texts in sources for text in texts for task in tasks]
    if not chats:
        raise ValueError(f"root: no docs or Python sources found under {root}")
    rng.shuffle(chats)
    prompts = [{"messages": [{"role": "user", "content": c}]} for c in chats[:count]]
    for _ in range(random_id_prompts):
        prompts.append({"prompt_token_ids": [rng.randrange(RANDOM_ID_LIMIT) for _ in range(128)], "ignore_eos": True,
                        "max_tokens": RANDOM_ID_ANSWER})
    return prompts


def _stdlib_files(rng: random.Random, limit: int = 150) -> list[Path]:
    from llmfleet.data.stdlib_corpus import iter_source_paths, stdlib_root
    root = stdlib_root()
    paths = sorted(root / rel for rel in iter_source_paths(root))
    return rng.sample(paths, min(limit, len(paths)))
