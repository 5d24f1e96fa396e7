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
    return xgr.Grammar.from_json_schema(spec, any_whitespace=False, strict_mode=True)


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
