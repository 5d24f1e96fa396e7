"""Prompts to token ids: completion prompts (text, texts, ids, lists of ids) and chat messages via a template.

Tokenizing happens here, with the server's own tokenizers (a TokenizerPool, off the event loop), so every prompt
reaches the engine as token ids and the context-length check knows the exact count. Text is bounded before it is
tokenized: a prompt longer than `max_chars` cannot fit the context whatever the tokenizer does with it.
"""
from __future__ import annotations

from typing import Any

from llmfleet.server.common.tokenizer_pool import TokenizerPool
from llmfleet.server.errors import APIError

# Characters per token beyond which no real text goes (long tokens are runs of spaces or symbols, ~16 characters):
# a prompt over max_model_len * this many characters cannot fit the context, so it is refused untokenized.
CHARS_PER_TOKEN = 32

# Used when the tokenizer has no chat template: plain "role: content" lines, then the assistant's turn.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


async def completion_prompts(prompt: Any, tokenizers: TokenizerPool, n: int, max_sequences: int,
                             max_chars: int) -> list[list[int]]:
    """`prompt` as OpenAI allows it (str, list[str], list[int], list[list[int]]) to one id list per prompt; at most
    `max_sequences` prompts x n per request."""
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt: must not be empty", "prompt", "invalid_value")
    if len(prompts) * n > max_sequences:
        raise APIError(400, f"prompt: a request may ask for at most {max_sequences} sequences (prompts x n); this "
                            f"one asks for {len(prompts)} x {n}", "prompt", "invalid_value")
    for p in prompts:
        if isinstance(p, str):
            check_length(len(p), max_chars, "prompt")
    ids = await tokenizers.run(_encode_all, prompts)
    if any(not p for p in ids):
        raise APIError(400, "prompt: must not be empty", "prompt", "invalid_value")
    return ids


async def chat_prompt(messages: list[dict], tokenizers: TokenizerPool, max_chars: int,
                      add_generation_prompt: bool = True, tools: list[dict] | None = None) -> list[int]:
    """Render `messages` (and `tools`, OpenAI's function definitions) with the tokenizer's chat template (or the
    plain default) and tokenize the text without adding special tokens: the template placed the ones it wants."""
    check_length(sum(len(m["content"]) + len(m.get("name", "")) for m in messages), max_chars, "messages")
    ids = await tokenizers.run(_render_and_encode, messages, add_generation_prompt, max_chars, tools)
    if not ids:
        raise APIError(400, "messages: render to an empty prompt", "messages", "invalid_value")
    return ids


def check_length(num_chars: int, max_chars: int, param: str) -> None:
    if num_chars > max_chars:
        raise APIError(400, f"{param}: has {num_chars} characters, more than can fit this model's context "
                            f"(at most {max_chars}: {CHARS_PER_TOKEN} per token of the context length); please "
                            f"shorten it", param, "context_length_exceeded")


def _encode_all(tokenizer: Any, prompts: list) -> list[list[int]]:
    return [tokenizer.encode(utf8(p, "prompt")) if isinstance(p, str) else list(p) for p in prompts]


def _render_and_encode(tokenizer: Any, messages: list[dict], add_generation_prompt: bool, max_chars: int,
                       tools: list[dict] | None = None) -> list[int]:
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             chat_template=template, tools=tools)
    except Exception as exc:  # noqa: BLE001 - a template that rejects these messages is the client's 400
        raise APIError(400, f"messages: the chat template could not render them: {exc}", "messages",
                       "invalid_value") from None
    check_length(len(text), max_chars, "messages")
    return tokenizer.encode(utf8(text, "messages"), add_special_tokens=False)


def utf8(text: str, param: str) -> str:
    """JSON can carry lone surrogates (\\ud800), which are not text: refuse them before the tokenizer chokes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(400, f"{param}: not valid Unicode text ({exc.reason} at character {exc.start})", param,
                       "invalid_value") from None
    return text
