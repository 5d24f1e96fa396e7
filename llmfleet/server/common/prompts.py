"""Prompts to token ids: completion prompts (text, texts, ids, lists of ids) and chat messages via a template.

Tokenizing happens here, with the server's own tokenizer copy, so every prompt reaches the engine as token ids and
the context-length check knows the exact count.
"""
from __future__ import annotations

from typing import Any

from llmfleet.server.errors import APIError

# Used when the tokenizer has no chat template: plain "role: content" lines, then the assistant's turn.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def completion_prompts(prompt: Any, tokenizer: Any, max_prompts: int) -> list[list[int]]:
    """`prompt` as OpenAI allows it (str, list[str], list[int], list[list[int]]) to one id list per prompt."""
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt: must not be empty", "prompt", "invalid_value")
    if len(prompts) > max_prompts:
        raise APIError(400, f"prompt: at most {max_prompts} prompts per request, got {len(prompts)}", "prompt",
                       "invalid_value")
    ids = [tokenizer.encode(_utf8(p, "prompt")) if isinstance(p, str) else list(p) for p in prompts]
    if any(not p for p in ids):
        raise APIError(400, "prompt: must not be empty", "prompt", "invalid_value")
    return ids


def chat_prompt(messages: list[dict], tokenizer: Any, add_generation_prompt: bool = True) -> list[int]:
    """Render `messages` with the tokenizer's chat template (or the plain default) and tokenize the text without
    adding special tokens: the template already placed the ones it wants."""
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             chat_template=template)
    except Exception as exc:  # noqa: BLE001 - a template that rejects these messages is the client's 400
        raise APIError(400, f"messages: the chat template could not render them: {exc}", "messages",
                       "invalid_value") from None
    ids = tokenizer.encode(_utf8(text, "messages"), add_special_tokens=False)
    if not ids:
        raise APIError(400, "messages: render to an empty prompt", "messages", "invalid_value")
    return ids


def _utf8(text: str, param: str) -> str:
    """JSON can carry lone surrogates (\\ud800), which are not text: refuse them before the tokenizer chokes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(400, f"{param}: not valid Unicode text ({exc.reason} at character {exc.start})", param,
                       "invalid_value") from None
    return text
