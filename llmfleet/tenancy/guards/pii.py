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

# What costs is Python's work per match, not the scanner's per character: so each pattern refuses in C what
# `_bounded` would refuse later (a start right after a letter or digit), credit cards need 13 digits in the
# regex, and IPv6 needs its "::" or eight groups; `_bounded` checks the rest after the match. Each scan runs only
# on text holding its trigger (a digit, "@", "." or "::"), so prose without digits costs two substring tests.
_B = r"(?<![0-9A-Za-z_])"  # not right after a letter, digit or underscore
_HEX = "[0-9A-Fa-f]"
_SCANS = (  # (kind, pattern, trigger); KINDS' order: the earlier kind wins an overlap
    ("SECRET", r"(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}"
               r"|AIza[0-9A-Za-z_-]{35}|-----BEGIN [A-Z ]*PRIVATE KEY-----)", "always"),
    ("EMAIL", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "@"),
    ("IBAN", _B + r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", "digit"),
    ("CREDIT_CARD", _B + r"\d(?:[ -]?\d){12,}+", "digit"),  # a whole run of digit groups, once; Luhn after
    ("SSN", _B + r"\d{3}-\d{2}-\d{4}", "digit"),
    ("IP_ADDRESS", _B + r"\d{1,3}(?:\.\d{1,3}){3}", "."),
    ("IP_ADDRESS", _B + rf"(?:(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}|{_HEX}{{0,4}}(?::{_HEX}{{1,4}}){{0,6}}::[0-9A-Fa-f:]{{0,35}})",
     ":"),
    ("PHONE", _B + r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?", "digit"),
)
KINDS = tuple(dict.fromkeys(kind for kind, _, _ in _SCANS))
_COMPILED = tuple((kind, re.compile(pattern), trigger) for kind, pattern, trigger in _SCANS)
_SSN_BAD = re.compile(r"^(?:000|666|9\d\d)|^\d{3}-00|0000$")
_MORE_DIGITS = re.compile(r"[ .-]\d")
_DIGIT = re.compile(r"\d")


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
        if len(text) - text.count(" ") - text.count("-") > 19:
            return False  # a longer run of numbers (a log line, a table): no card
        digits = text.replace(" ", "").replace("-", "")
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
    if ":" not in text:  # a dotted quad: four numbers up to 255, none with a leading zero
        return all(int(part) <= 255 and (part == "0" or part[0] != "0") for part in text.split("."))
    if text.count(":") < 2:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _triggers(text: str) -> frozenset[str]:
    """Which scans `text` calls for: a digit (every number-shaped kind), "@", "." (dotted quads), ":"."""
    if _DIGIT.search(text) is None:
        return frozenset({"always", "@"} if "@" in text else {"always"})
    found = {"always", "digit"}
    found.update(t for t in ("@", ".") if t in text)
    if "::" in text or text.count(":") >= 7:
        found.add(":")
    return frozenset(found)


def find(text: str, kinds: tuple[str, ...] = KINDS) -> list[Hit]:
    """Non-overlapping hits in `text`, in order; on an overlap the kind listed first in KINDS wins."""
    hits: list[Hit] = []  # kept sorted by start, non-overlapping
    starts: list[int] = []  # hits' starts, for bisect
    triggers = _triggers(text)
    for kind, pattern, trigger in _COMPILED:
        if trigger not in triggers or kind not in kinds:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            at = bisect.bisect_left(starts, start)
            free = (at == 0 or hits[at - 1].end <= start) and (at == len(hits) or end <= starts[at])
            if free and _bounded(text, start, end, kind) and _valid(kind, match.group()):
                hits.insert(at, Hit(kind, start, end))
                starts.insert(at, start)
    return hits


def mask(text: str, hits: list[Hit]) -> str:
    parts, last = [], 0
    for hit in hits:
        parts += [text[last:hit.start], f"[{hit.kind}]"]
        last = hit.end
    return "".join(parts) + text[last:]
