"""A request's prompt as the replica will see it: token ids, then chain hashes of its full blocks.

The gateway tokenizes with the model's own tokenizer (the `tokenizers` library on the folder's tokenizer.json, no
torch) the way `llmfleet serve` does: completion text with the tokenizer's special tokens, chat messages rendered
by the folder's chat template and tokenized without adding any. Whatever cannot be tokenized that way (no template,
a template that rejects the messages) gives None: the request is then routed on load alone.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from llmfleet.protocol.block_hash import hash_prefix

logger = logging.getLogger(__name__)


def tokenizer_folder(name: str) -> Path:
    """A folder holding tokenizer.json: the path itself, or a built-in demo model's name."""
    from llmfleet.demo_models import demo_path

    folder = Path(demo_path(name) or name)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"tokenizer: no tokenizer.json in {str(folder)!r}")
    return folder


class PromptHasher:
    def __init__(self, folder: str, block_size: int):
        from tokenizers import Tokenizer

        path = tokenizer_folder(folder)
        self.block_size = block_size
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        settings = _read_json(path / "tokenizer_config.json")
        self.special = {k: _token_text(v) for k, v in settings.items() if k.endswith("_token") and v is not None}
        template = settings.get("chat_template")
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        self._template = _compile(template) if isinstance(template, str) else None

    def token_ids(self, path: str, payload: dict) -> list[int] | None:
        try:
            if path.endswith("/chat/completions"):
                return self._chat_ids(payload.get("messages"))
            return self._completion_ids(payload.get("prompt"))
        except Exception as exc:  # noqa: BLE001 - a prompt we cannot reproduce is routed on load alone
            logger.debug("prompt not hashed: %s", exc)
            return None

    def block_hashes(self, token_ids: list[int], salt: str = "") -> list[bytes]:
        """Chain hashes of the full blocks, in the namespace `salt` (a LoRA adapter's; "" for a base model)."""
        return hash_prefix(token_ids, self.block_size, salt)

    def _completion_ids(self, prompt: Any) -> list[int] | None:
        if isinstance(prompt, list) and prompt:
            prompt = prompt if isinstance(prompt[0], int) else prompt[0]   # several prompts: route on the first
        if isinstance(prompt, str) and prompt:
            return self.tokenizer.encode(prompt).ids
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return prompt
        return None

    def _chat_ids(self, messages: Any) -> list[int] | None:
        if self._template is None or not isinstance(messages, list):
            return None
        text = self._template.render(messages=messages, add_generation_prompt=True, **self.special)
        return self.tokenizer.encode(text, add_special_tokens=False).ids


def _compile(template: str):
    """The chat template in a sandbox, with the helpers Hugging Face templates expect."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value
