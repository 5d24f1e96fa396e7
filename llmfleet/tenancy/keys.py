"""Virtual keys: generated at random, stored only as HMAC-SHA256 under the server's secret, compared in constant
time. A key's plain text exists only in the answer to /key/generate and in the client's hands."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid

KEY_PREFIX = "sk-"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    return uuid.uuid4().hex


def key_hash(secret: bytes, key: str) -> str:
    """The stored and looked-up form of a key: hex HMAC-SHA256. Lookups go by this value (an index, not a
    comparison of secrets); the master key is compared with `same_secret`."""
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def key_hint(key: str) -> str:
    """What may be shown of a key: its prefix and last four characters."""
    return f"{KEY_PREFIX}...{key[-4:]}"


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of `Authorization: Bearer <token>` (or `x-api-key`), None when absent."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:].strip() if text[:7].lower() == "bearer " else None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


def parse_duration(value: str | int | float | None, field: str) -> float | None:
    """Seconds from "30s", "15m", "1h", "30d", "2w" or a number of seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(int(match.group(1)) * _UNITS[match.group(2)])
    else:
        raise ValueError(f"{field}: a duration like 30s, 15m, 1h, 30d or a number of seconds expected, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"{field}: must be a positive duration, got {value!r}")
    return seconds
