"""From a StructuredSpec to an xgrammar Grammar: one builder per kind.

Building parses the spec without a tokenizer (milliseconds), so the API server uses `check` to refuse a bad schema,
regex or EBNF with a 400 before admission; the engine core compiles the same Grammar against its vocabulary.
JSON is generated without free whitespace (`any_whitespace=False`): a weak model cannot pad it forever.
"""
from __future__ import annotations

import json

import xgrammar as xgr

from llmfleet.protocol.structured import StructuredSpec


def _json_schema(spec: str) -> xgr.Grammar:
    schema = _bounded_strings(json.loads(spec))
    return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)


# A JSON string's characters without escapes: anything but '"', '\' and control characters.
_PLAIN_CHAR = r'[^"\\\x00-\x1f]'


def _bounded_strings(node):
    """The schema with each length-bounded string (minLength / maxLength, no pattern or format) given as the
    equivalent pattern over unescaped characters: xgrammar's length-bounded strings admit raw control
    characters, which JSON forbids."""
    if isinstance(node, list):
        return [_bounded_strings(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _bounded_strings(value) for key, value in node.items()}
    bounded = "minLength" in node or "maxLength" in node
    if node.get("type") == "string" and bounded and "pattern" not in node and "format" not in node:
        low, high = node.pop("minLength", 0), node.pop("maxLength", "")
        node["pattern"] = f"^{_PLAIN_CHAR}{{{low},{high}}}$"
    return node


def _json_object(spec: str) -> xgr.Grammar:
    return xgr.Grammar.from_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)


def _choice(spec: str) -> xgr.Grammar:
    choices = json.loads(spec)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("must be a non-empty list of non-empty strings")
    return xgr.Grammar.from_ebnf("root ::= " + " | ".join(_ebnf_literal(c) for c in choices))


def _ebnf_literal(text: str) -> str:
    """A double-quoted EBNF string literal matching `text` exactly."""
    escaped = []
    for ch in text:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20:
            escaped.append(f"\\x{ord(ch):02x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


_BUILDERS = {
    "json": _json_schema,
    "json_object": _json_object,
    "regex": xgr.Grammar.from_regex,
    "choice": _choice,
    "grammar": xgr.Grammar.from_ebnf,
}


def build_grammar(spec: StructuredSpec) -> xgr.Grammar:
    """The grammar of `spec`; raises ValueError saying what is wrong with it."""
    try:
        return _BUILDERS[spec.kind](spec.spec)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"invalid {spec.kind} constraint: {_reason(exc)}") from None


def check(spec: StructuredSpec, field: str) -> None:
    """Raises ValueError naming `field` when `spec` does not build into a grammar."""
    try:
        build_grammar(spec)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _reason(exc: Exception) -> str:
    """xgrammar's messages start with a timestamp and a source location: keep what follows them."""
    text = str(exc).strip()
    head, sep, tail = text.partition(": ")
    return tail if sep and head.startswith("[") and ".cc:" in head else text
