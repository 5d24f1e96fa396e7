"""Per-request parameters of a pooling (embedding) request, validated on construction (errors name the field).

A pooling request runs its prompt through the model once and returns one vector per prompt: the hidden states of
its tokens pooled (mean, the last token, or the first/CLS token) and, by default, L2-normalized. It generates no
tokens. Which pooling applies is the engine's (`EngineConfig.pooling`, else the model folder's sentence-transformers
config); a request may only turn normalization off.
"""
from __future__ import annotations

from dataclasses import dataclass

POOLING_METHODS = ("mean", "last", "cls")


@dataclass(frozen=True, slots=True)
class PoolingParams:
    normalize: bool | None = None      # None: what the model's config says (sentence-transformers' Normalize)

    def __post_init__(self) -> None:
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise ValueError(f"normalize: must be true, false or null, got {self.normalize!r}")


def check_pooling_method(value: str | None) -> None:
    """ValueError naming `pooling` for anything but None or one of POOLING_METHODS."""
    if value is not None and value not in POOLING_METHODS:
        raise ValueError(f"pooling: unknown value {value!r}; use one of {', '.join(POOLING_METHODS)}")
