"""OpenAI's attribute filters for vector store search: comparisons and compound and/or over file attributes.

    {"type": "eq", "key": "region", "value": "eu"}                      eq ne gt gte lt lte, in nin (a list)
    {"type": "and", "filters": [<filter>, ...]}                        and / or, nested

A filter is checked once when the request arrives (`parse_filter`, ValueError naming the field) and evaluated per
file (`matches`); the files that pass become the document set the index query is restricted to, so filtering
happens inside the search, never on its top-k.
"""
from __future__ import annotations

import operator

COMPARISONS = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
               "lte": operator.le}
MEMBERSHIP = ("in", "nin")
COMPOUND = ("and", "or")
Scalar = (str, int, float, bool)


def parse_filter(spec, field: str = "filters") -> dict:
    """`spec` validated (and returned); ValueError names the offending field path."""
    if not isinstance(spec, dict):
        raise ValueError(f"{field}: an object expected")
    kind = spec.get("type")
    if kind in COMPOUND:
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise ValueError(f"{field}.filters: a non-empty list expected for a compound filter")
        return {"type": kind, "filters": [parse_filter(p, f"{field}.filters[{i}]") for i, p in enumerate(parts)]}
    if kind in COMPARISONS or kind in MEMBERSHIP:
        key, value = spec.get("key"), spec.get("value")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{field}.key: a non-empty string expected")
        if kind in MEMBERSHIP:
            if not isinstance(value, list) or not all(isinstance(v, Scalar) for v in value):
                raise ValueError(f"{field}.value: a list of strings, numbers or booleans expected for {kind!r}")
        elif not isinstance(value, Scalar):
            raise ValueError(f"{field}.value: a string, number or boolean expected")
        return {"type": kind, "key": key, "value": value}
    raise ValueError(f"{field}.type: one of {', '.join([*COMPARISONS, *MEMBERSHIP, *COMPOUND])} expected, "
                     f"got {kind!r}")


def matches(spec: dict, attributes: dict) -> bool:
    """Whether a file with `attributes` passes the (parsed) filter. A missing attribute or one of another type
    fails every comparison except "ne" and "nin"."""
    kind = spec["type"]
    if kind == "and":
        return all(matches(p, attributes) for p in spec["filters"])
    if kind == "or":
        return any(matches(p, attributes) for p in spec["filters"])
    value, present = attributes.get(spec["key"]), spec["key"] in attributes
    if kind in MEMBERSHIP:
        inside = present and any(_comparable(value, v) and value == v for v in spec["value"])
        return inside if kind == "in" else not inside
    if not present or not _comparable(value, spec["value"]):
        return kind == "ne"
    return COMPARISONS[kind](value, spec["value"])


def _comparable(a, b) -> bool:
    """Numbers compare with numbers, strings with strings, booleans with booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str)
    return isinstance(a, (int, float)) and isinstance(b, (int, float))


def parse_attributes(attributes, field: str = "attributes") -> dict:
    """A file's attributes as OpenAI allows them: at most 16 keys, string values of at most 512 characters,
    numbers or booleans."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise ValueError(f"{field}: an object expected")
    if len(attributes) > 16:
        raise ValueError(f"{field}: at most 16 keys, got {len(attributes)}")
    for key, value in attributes.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ValueError(f"{field}: keys must be strings of 1 to 64 characters, got {key!r}")
        if not isinstance(value, Scalar) or (isinstance(value, str) and len(value) > 512):
            raise ValueError(f"{field}.{key}: a string of at most 512 characters, a number or a boolean expected")
    return dict(attributes)
