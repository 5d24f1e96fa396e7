"""Request strings must be text: JSON can carry lone surrogates (\\ud800) that no encoder, tokenizer or response
renderer accepts. Every string a request holds is checked once, up front, so that each gives a 400 naming its field
instead of failing wherever it is first used."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmfleet.server.errors import APIError

_SCALARS = (int, float, bool, type(None))


def check_text(value: Any, path: str = "") -> None:
    """Raise a 400 naming the field (`messages.0.content`) of the first string in `value` that is not valid
    Unicode; `value` is a request model or anything it holds."""
    if isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, BaseModel):
        for name in value.model_fields_set:
            check_text(getattr(value, name), _join(path, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path)
            check_text(item, _join(path, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, _SCALARS):  # long token-id lists: skip the ids cheaply
                check_text(item, _join(path, str(i)))


def _check_string(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        param = path.encode("utf-8", "backslashreplace").decode() or None
        raise APIError(400, f"{param}: not valid Unicode text ({exc.reason} at character {exc.start})", param,
                       "invalid_value") from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
