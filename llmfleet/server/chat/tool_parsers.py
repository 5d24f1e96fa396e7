"""Tool calls out of generated text, one parser per model family (`--tool-call-parser`).

A parser knows where calls begin in the text (`start`) and reads the calls from there (`calls`): with final=False
only calls that are complete so far (for streaming), with final=True also one the end of the text cut short of its
closing tag. Every call comes out as (name, arguments as compact JSON text), so a streamed answer and a whole one
carry the same strings. Text that holds no parseable call is plain content.
"""
from __future__ import annotations

import json
import re

ParsedCall = tuple[str, str]   # (function name, arguments as JSON text)

_DECODER = json.JSONDecoder()


def arguments_text(arguments) -> str:
    """The arguments object as OpenAI carries it: JSON text."""
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def call_of(obj, arguments_key: str) -> ParsedCall | None:
    """(name, arguments) of a decoded {"name": ..., <arguments_key>: {...}} object; None if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = obj.get(arguments_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return (obj["name"], arguments_text(arguments)) if isinstance(arguments, dict) else None


def _partial_marker(text: str, marker: str) -> int:
    """Where a tail of `text` that could grow into `marker` begins (len(text) when none does)."""
    for i in range(max(0, len(text) - len(marker) + 1), len(text)):
        if marker.startswith(text[i:]):
            return i
    return len(text)


class HermesParser:
    """Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call."""
    may_call = True
    marker, close = "<tool_call>", "</tool_call>"

    def start(self, text: str) -> int:
        found = text.find(self.marker)
        return found if found >= 0 else _partial_marker(text, self.marker)

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        pattern = rf"{re.escape(self.marker)}(.*?){re.escape(self.close)}" + ("|" + re.escape(self.marker) +
                                                                           r"(.*)$" if final else "")
        found = []
        for match in re.finditer(pattern, text, re.DOTALL):
            body = match.group(1) if match.group(1) is not None else match.group(2)
            try:
                call = call_of(json.loads(body), "arguments")
            except json.JSONDecodeError:
                continue
            if call is not None:
                found.append(call)
        return found


class MistralParser:
    """Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` after any content."""
    may_call = True
    marker = "[TOOL_CALLS]"

    def start(self, text: str) -> int:
        found = text.find(self.marker)
        return found if found >= 0 else _partial_marker(text, self.marker)

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        body = text[text.find(self.marker) + len(self.marker):].lstrip() if self.marker in text else ""
        try:
            value, _ = _DECODER.raw_decode(body)
        except json.JSONDecodeError:
            return []
        items = value if isinstance(value, list) else [value]
        found = [call_of(item, "arguments") for item in items]
        return found if found and all(found) else []


class Llama3JsonParser:
    """Llama 3.x JSON tool calls: the whole answer is `{"name": ..., "parameters": {...}}` (optionally after
    `<|python_tag|>`, several separated by `;`); anything else is content. Calls are known only at the end."""
    may_call = True
    tag = "<|python_tag|>"

    def start(self, text: str) -> int:
        stripped = text.lstrip()
        lead = len(text) - len(stripped)
        if not stripped or stripped.startswith(("{", self.tag)) or self.tag.startswith(stripped):
            return lead if stripped else len(text)
        return len(text)

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        if not final:
            return []
        body = text.strip()
        body = body[len(self.tag):].lstrip() if body.startswith(self.tag) else body
        found, pos = [], 0
        while pos < len(body):
            try:
                value, end = _DECODER.raw_decode(body, pos)
            except json.JSONDecodeError:
                return []
            call = call_of(value, "parameters")
            if call is None:
                return []
            found.append(call)
            pos = end
            while pos < len(body) and body[pos] in " \n\t;":
                pos += 1
        return found


PARSERS = {"hermes": HermesParser, "qwen": HermesParser, "mistral": MistralParser, "llama3_json": Llama3JsonParser}
