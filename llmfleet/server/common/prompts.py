"""Prompts to token ids: completion prompts (text, texts, ids, lists of ids) and chat messages via a template.

Tokenizing happens here, with the server's own tokenizers (a TokenizerPool, off the event loop), so every prompt
reaches the engine as token ids and the context-length check knows the exact count. Text is bounded before it is
tokenized: a prompt longer than `max_chars` cannot fit the context whatever the tokenizer does with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


# Names of FIM control tokens, per family: (prefix, suffix, middle); a prompt is prefix P suffix S middle.
_FIM_TOKENS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
               ("<PRE>", "<SUF>", "<MID>"))


async def fill_in_the_middle(prompts: list[list[int]], suffix: str, tokenizers: TokenizerPool) -> list[list[int]]:
    """Prompts that ask for the text between each prompt and `suffix`, in the model's FIM tokens; 400 for a model
    that has none."""
    return await tokenizers.run(_fim, prompts, suffix)


def _fim(tokenizer: Any, prompts: list[list[int]], suffix: str) -> list[list[int]]:
    tokens = next((ids for ids in (_token_ids(tokenizer, names) for names in _FIM_TOKENS) if ids), None)
    if tokens is None:
        raise APIError(400, "suffix is not supported by this model (it has no fill-in-the-middle tokens)", "suffix",
                       "unsupported")
    prefix, middle_marker, middle = tokens
    after = tokenizer.encode(utf8(suffix, "suffix"), add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    return [[prefix] + (p[1:] if p[:1] == [bos] else p) + [middle_marker] + after + [middle] for p in prompts]


def _token_ids(tokenizer: Any, names: tuple[str, ...]) -> list[int] | None:
    vocab_ids = [tokenizer.convert_tokens_to_ids(name) for name in names]
    unknown = getattr(tokenizer, "unk_token_id", None)
    return vocab_ids if all(isinstance(i, int) and i != unknown for i in vocab_ids) else None


async def echo_texts(prompt: Any, ids: list[list[int]], tokenizers: TokenizerPool) -> list[str]:
    """Each prompt's text for `echo`: as given, or decoded from its token ids."""
    given = [prompt] if isinstance(prompt, str) else list(prompt)
    if all(isinstance(p, str) for p in given):
        return given
    return await tokenizers.run(lambda tokenizer: [tokenizer.decode(p) for p in ids])


@dataclass(frozen=True, slots=True)
class ChatRender:
    """How messages become the prompt: the request's template options."""
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template: str | None = None                  # the request's own template, else the model's (or default)
    template_kwargs: dict[str, Any] = field(default_factory=dict)


async def chat_prompt(messages: list[dict], tokenizers: TokenizerPool, max_chars: int,
                      render: ChatRender = ChatRender(), tools: list[dict] | None = None) -> list[int]:
    """Render `messages` (and `tools`, OpenAI's function definitions) with the chat template (the request's, the
    tokenizer's or the plain default) and tokenize the text without adding special tokens: the template already
    placed the ones it wants."""
    check_length(sum(len(m["content"]) + len(m.get("name", "")) for m in messages), max_chars, "messages")
    ids = await tokenizers.run(_render_and_encode, messages, render, max_chars, tools)
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


def _render_and_encode(tokenizer: Any, messages: list[dict], render: ChatRender, max_chars: int,
                       tools: list[dict] | None = None) -> list[int]:
    template = render.chat_template or (None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template, tools=tools,
                                             add_generation_prompt=render.add_generation_prompt,
                                             continue_final_message=render.continue_final_message,
                                             **render.template_kwargs)
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
