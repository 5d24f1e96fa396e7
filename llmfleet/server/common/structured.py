"""Request fields to one StructuredSpec: OpenAI's `response_format`, vLLM's `guided_*` and `structured_outputs`.

At most one constraint per request (two are a 400 naming both). Each spec is built into a grammar here, before
admission, so a bad JSON schema, regex or EBNF is the client's 400 and never reaches the engine.
"""
from __future__ import annotations

import json
from typing import Any

from llmfleet.engine.structured.grammar import check
from llmfleet.protocol.openai.common import SamplingFields
from llmfleet.protocol.structured import StructuredSpec
from llmfleet.server.errors import APIError


def structured_spec(req: SamplingFields) -> StructuredSpec | None:
    """The request's constraint, checked; None when it has none. Raises APIError (400) naming the field."""
    found = [(field, spec) for field, spec in _candidates(req) if spec is not None]
    if len(found) > 1:
        names = " and ".join(field for field, _ in found)
        raise APIError(400, f"{found[1][0]}: give one structured-output constraint, not {names}", found[1][0],
                       "invalid_value")
    if not found:
        return None
    field, spec = found[0]
    try:
        check(spec, field)
    except ValueError as exc:
        raise APIError.from_value_error(exc) from None
    return spec


def _candidates(req: SamplingFields):
    yield "response_format", _response_format(req.response_format)
    yield "guided_json", _json_spec(req.guided_json, "guided_json")
    yield "guided_regex", _spec("regex", req.guided_regex, "guided_regex")
    yield "guided_choice", _choice(req.guided_choice, "guided_choice")
    yield "guided_grammar", _spec("grammar", req.guided_grammar, "guided_grammar")
    so = req.structured_outputs
    if so is not None:
        specs = [("structured_outputs.json", _json_spec(so.json_, "structured_outputs.json")),
                 ("structured_outputs.regex", _spec("regex", so.regex, "structured_outputs.regex")),
                 ("structured_outputs.choice", _choice(so.choice, "structured_outputs.choice")),
                 ("structured_outputs.grammar", _spec("grammar", so.grammar, "structured_outputs.grammar")),
                 ("structured_outputs.json_object", StructuredSpec("json_object") if so.json_object else None)]
        given = [(f, s) for f, s in specs if s is not None]
        if len(given) != 1:
            raise APIError(400, "structured_outputs: give exactly one of json, regex, choice, grammar, json_object",
                           "structured_outputs", "invalid_value")
        yield given[0]


def _response_format(value: dict[str, Any] | None) -> StructuredSpec | None:
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredSpec("json_object")
    if kind != "json_schema":
        raise APIError(400, f"response_format.type: must be text, json_object or json_schema, got {kind!r}",
                       "response_format.type", "invalid_value")
    body = value.get("json_schema")
    if not isinstance(body, dict) or not isinstance(body.get("schema", {}), (dict, bool)):
        raise APIError(400, "response_format.json_schema: must be an object with a `schema` object",
                       "response_format.json_schema", "invalid_value")
    if body.get("strict") is not None and not isinstance(body["strict"], bool):
        raise APIError(400, "response_format.json_schema.strict: must be a boolean",
                       "response_format.json_schema.strict", "invalid_value")
    # strict or not, the output is held to the schema (its grammar allows nothing else)
    return _json_spec(body.get("schema", {}), "response_format.json_schema.schema")


def _json_spec(schema: dict | str | bool | None, field: str) -> StructuredSpec | None:
    if schema is None:
        return None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise APIError(400, f"{field}: not valid JSON ({exc.msg})", field, "invalid_value") from None
    if not isinstance(schema, (dict, bool)):
        raise APIError(400, f"{field}: a JSON schema must be an object", field, "invalid_value")
    return StructuredSpec("json", json.dumps(schema))


def _spec(kind: str, text: str | None, field: str) -> StructuredSpec | None:
    if text is None:
        return None
    if not text:
        raise APIError(400, f"{field}: must not be empty", field, "invalid_value")
    return StructuredSpec(kind, text)


def _choice(choices: list[str] | None, field: str) -> StructuredSpec | None:
    if choices is None:
        return None
    if not choices or not all(choices):
        raise APIError(400, f"{field}: must be a non-empty list of non-empty strings", field, "invalid_value")
    return StructuredSpec("choice", json.dumps(choices))
