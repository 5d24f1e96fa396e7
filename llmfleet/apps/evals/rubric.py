"""Rubrics for the judge: named criteria, each with a description and an integer scale, read from YAML, and the
JSON schema the judge's answer must follow (sent as response_format json_schema, so a served model can only
answer in it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    description: str
    low: int = 1
    high: int = 5


@dataclass(frozen=True, slots=True)
class Rubric:
    name: str
    criteria: tuple[Criterion, ...]
    instructions: str = ""

    def schema(self) -> dict:
        properties = {c.name: {"type": "integer", "minimum": c.low, "maximum": c.high} for c in self.criteria}
        return {"type": "object", "properties": properties, "required": [c.name for c in self.criteria],
                "additionalProperties": False}

    def describe(self) -> str:
        lines = [f"- {c.name} ({c.low} to {c.high}): {c.description}" for c in self.criteria]
        return "\n".join(lines)


def rubric_from_dict(data: dict) -> Rubric:
    """{name, instructions?, criteria: [{name, description, scale?: [low, high]}]}; ValueError names the field."""
    if not isinstance(data, dict):
        raise ValueError("rubric: a mapping with name and criteria expected")
    raw = data.get("criteria")
    if not isinstance(raw, list) or not raw:
        raise ValueError("criteria: a non-empty list of {name, description, scale} expected")
    criteria = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].isidentifier():
            raise ValueError(f"criteria.{i}.name: an identifier (letters, digits, _) expected")
        scale = item.get("scale", [1, 5])
        if (not isinstance(scale, list) or len(scale) != 2 or not all(isinstance(s, int) for s in scale)
                or scale[0] >= scale[1]):
            raise ValueError(f"criteria.{i}.scale: [low, high] integers with low < high expected, got {scale!r}")
        criteria.append(Criterion(item["name"], str(item.get("description", "")), scale[0], scale[1]))
    if len({c.name for c in criteria}) != len(criteria):
        raise ValueError("criteria: two criteria have the same name")
    return Rubric(str(data.get("name", "rubric")), tuple(criteria), str(data.get("instructions", "")))


def load_rubric(path: str) -> Rubric:
    import yaml

    with open(path, encoding="utf-8") as f:
        return rubric_from_dict(yaml.safe_load(f))


CORRECTNESS = Rubric("correctness", (Criterion("correctness", "Does the answer give the same result as the "
                                               "reference answer? 5: the same; 1: a different or no result."),))
