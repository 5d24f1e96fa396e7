"""Checks shared by every config file reader (fleet.yaml sections, deployment specs, console and apps settings)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def reject_unknown(data: Mapping[str, Any], known: Iterable[str], where: str = "") -> None:
    """Raise a ValueError naming the first setting of `data` (sorted) that is not in `known`, with its place in the
    file (`where`, e.g. "console") and the settings that are known."""
    known = set(known)
    unknown = sorted(set(data) - known)
    if unknown:
        place = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ValueError(f"{place}: unknown setting; known: {', '.join(sorted(known))}")
