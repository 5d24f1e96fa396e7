"""PII detection by regular expressions, with the formats' own checksums where they have one (Luhn for card
numbers, ISO 13616 mod-97 for IBANs, address parsing for IPv6), so that order numbers and dates are not flagged.

`find(text)` returns non-overlapping hits, the earlier kind in KINDS winning an overlap; `mask(text)` replaces each
hit by its kind in brackets, e.g. "[EMAIL]".
"""
from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass

# Each pattern starts with a plain character class (no look-behind), which keeps Python's scanner fast; the
# boundaries a hit needs are checked after the match (`_bounded`), and each kind runs only on text holding its
# trigger character (a digit, "@", ":").
_PATTERNS = {
    "SECRET": r"(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}"
              r"|AIza[0-9A-Za-z_-]{35}|-----BEGIN [A-Z ]*PRIVATE KEY-----)",
    "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "IBAN": r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}",
    "CREDIT_CARD": r"\d(?:[ -]?\d)*+",  # a whole run of digit groups, once; 13-19 digits and Luhn checked after
    "SSN": r"\d{3}-\d{2}-\d{4}",
    "IP_ADDRESS": r"\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]{0,35}",
    "PHONE": r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?",
}
KINDS = tuple(_PATTERNS)
_COMPILED = {kind: re.compile(pattern) for kind, pattern in _PATTERNS.items()}
_SSN_BAD = re.compile(r"^(?:000|666|9\d\d)|^\d{3}-00|0000$")
_MORE_DIGITS = re.compile(r"[ .-]\d")


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _bounded(text: str, start: int, end: int, kind: str) -> bool:
    """No letter or digit right before or after the hit, nor a joining character ("-", ".", ":") that continues
    a number (so "1.2.3.4.5" is no address, while a sentence's final period is fine)."""
    if kind == "PHONE" and _MORE_DIGITS.match(text, end):
        return False  # a longer run of digit groups (a card number that failed its checksum, an id)
    joins = "-.:" if kind in ("CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE") else ""
    before, after = text[start - 1:start], text[end:end + 1]
    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
        return False
    if before and before in joins and text[start - 2:start - 1].isdigit():
        return False
    return not (after and after in joins and text[end + 1:end + 2].isdigit())


def _valid(kind: str, text: str) -> bool:
    if kind == "CREDIT_CARD":
        digits = re.sub(r"\D", "", text)
        return 13 <= len(digits) <= 19 and luhn_ok(digits)
    if kind == "IBAN":
        return iban_ok(text)
    if kind == "IP_ADDRESS":
        return _address_ok(text)
    if kind == "SSN":
        return _SSN_BAD.search(text) is None
    if kind == "PHONE":
        return sum(c.isdigit() for c in text) >= 7
    return True


def _address_ok(text: str) -> bool:
    if ":" in text and text.count(":") < 2:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _runs(kind: str, text: str, has_digit: bool) -> bool:
    if kind == "EMAIL":
        return "@" in text
    if kind == "IP_ADDRESS":
        return has_digit and ("." in text or ":" in text)
    return kind == "SECRET" or has_digit


def find(text: str, kinds: tuple[str, ...] = KINDS) -> list[Hit]:
    """Non-overlapping hits in `text`, in order; on an overlap the kind listed first in KINDS wins."""
    hits: list[Hit] = []  # kept sorted by start, non-overlapping
    has_digit = any(c.isdigit() for c in text)
    for kind in (k for k in KINDS if k in kinds and _runs(k, text, has_digit)):
        for match in _COMPILED[kind].finditer(text):
            start, end = match.span()
            at = bisect.bisect_left(hits, start, key=lambda h: h.start)
            free = (at == 0 or hits[at - 1].end <= start) and (at == len(hits) or end <= hits[at].start)
            if free and _bounded(text, start, end, kind) and _valid(kind, match.group()):
                hits.insert(at, Hit(kind, start, end))
    return hits


def mask(text: str, hits: list[Hit]) -> str:
    parts, last = [], 0
    for hit in hits:
        parts += [text[last:hit.start], f"[{hit.kind}]"]
        last = hit.end
    return "".join(parts) + text[last:]
