"""Chat messages as templates take them, and the request's template options (shared by chat and /tokenize)."""
from __future__ import annotations

import json

from llmfleet.server.common.prompts import ChatRender
from llmfleet.server.errors import APIError


def template_messages(req) -> list[dict]:
    """Messages as chat templates expect them: content as one string (text parts joined by newlines)."""
    messages = []
    for i, message in enumerate(req.messages):
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise APIError(400, f"messages.{i}.content: only text parts are supported",
                               f"messages.{i}.content", "unsupported")
            content = "\n".join(part.text for part in content)
        entry = {"role": message.role, "content": content or ""}
        if message.name is not None:
            entry["name"] = message.name
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            entry["tool_calls"] = [_template_call(call) for call in message.tool_calls]
        messages.append(entry)
    return messages


def _template_call(call) -> dict:
    """A past call as chat templates read it: arguments as an object where they parse (most templates write them
    out with `tojson`), else the text as sent."""
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}


# apply_chat_template's own arguments: chat_template_kwargs may not set them.
_RESERVED_KWARGS = frozenset({"conversation", "messages", "tools", "documents", "chat_template", "tokenize",
                              "add_generation_prompt", "continue_final_message", "padding", "truncation",
                              "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
                              "tokenizer_kwargs"})


def render_options(req) -> ChatRender:
    """The template options of a request (chat, or /tokenize with messages); 400 for contradicting ones."""
    if req.continue_final_message and req.add_generation_prompt:
        raise APIError(400, "continue_final_message: cannot be combined with add_generation_prompt (set it to "
                            "false)", "continue_final_message", "invalid_value")
    if req.continue_final_message and req.messages[-1].role != "assistant":
        raise APIError(400, "continue_final_message: the last message must be the assistant's", "messages",
                       "invalid_value")
    kwargs = req.chat_template_kwargs or {}
    reserved = sorted(_RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise APIError(400, f"chat_template_kwargs: {reserved[0]} is set by the request itself, not by the "
                            f"template's variables", "chat_template_kwargs", "invalid_value")
    return ChatRender(req.add_generation_prompt, req.continue_final_message, req.chat_template, dict(kwargs))
