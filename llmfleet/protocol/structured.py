"""What a constrained request must produce, as plain data: a kind and its spec text (no grammar engine here).

The API server turns `response_format`, vLLM's `guided_*` fields and `structured_outputs` into one StructuredSpec;
it travels inside SamplingParams to the engine core, which compiles it (off its step loop) into a grammar whose
token masks steer sampling. Equal specs share one compiled grammar: `key` is the cache key.
"""
from __future__ import annotations

from dataclasses import dataclass

# kind -> what `spec` holds
KINDS = {
    "json": "a JSON schema, as JSON text",
    "json_object": "nothing (any JSON object); spec is ''",
    "regex": "a regular expression the whole output must match",
    "choice": "a JSON list of the strings the output must be one of",
    "grammar": "an EBNF grammar (GBNF style) whose `root` rule the output must match",
}


@dataclass(frozen=True, slots=True)
class StructuredSpec:
    kind: str
    spec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"structured.kind: must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not isinstance(self.spec, str):
            raise ValueError(f"structured.spec: must be a string, got {type(self.spec).__name__}")
        if self.kind != "json_object" and not self.spec:
            raise ValueError(f"structured.spec: a {self.kind} constraint needs {KINDS[self.kind]}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.spec)

    def to_wire(self) -> dict:
        return {"kind": self.kind, "spec": self.spec}

    @classmethod
    def from_wire(cls, value: "StructuredSpec | dict | None") -> "StructuredSpec | None":
        if value is None or isinstance(value, StructuredSpec):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"structured: must be a StructuredSpec or a dict, got {type(value).__name__}")
        return cls(**value)
