"""Prices per model (dollars per 1M input and output tokens) and the cost of a request.

The table comes from TenancyConfig.prices and/or a YAML or JSON file of the same shape:
    {"tiny": {"input": 0.1, "output": 0.4}, "default": {"input": 0, "output": 0}}
A model without an entry costs the "default" entry, and nothing when there is none.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


class PriceTable:
    def __init__(self, prices: dict[str, Price]):
        self._prices = dict(prices)
        self._default = self._prices.pop("default", Price())

    @classmethod
    def load(cls, prices: dict, path: str | None = None) -> "PriceTable":
        merged = dict(_read(path)) if path else {}
        merged.update(prices)
        return cls({model: _price(model, entry) for model, entry in merged.items()})

    def price(self, model: str | None) -> Price:
        return self._prices.get(model or "", self._default)

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price(model).cost(prompt_tokens, completion_tokens)


def _read(path: str) -> dict:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"price_file: {path} must hold a mapping of model name to prices")
    return data


def _price(model: str, entry) -> Price:
    if isinstance(entry, Price):
        return entry
    if not isinstance(entry, dict) or not set(entry) <= {"input", "output"}:
        raise ValueError(f"prices.{model}: expected {{input, output}} in dollars per 1M tokens, got {entry!r}")
    values = [entry.get("input", 0), entry.get("output", 0)]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in values):
        raise ValueError(f"prices.{model}: prices must be non-negative numbers, got {entry!r}")
    return Price(float(values[0]), float(values[1]))
