"""The near-miss guard: two prompts whose embeddings are close may still ask different things. A semantic match
is refused unless both prompts carry the same numbers (digits and number words, in order), the same count of
negations, the same named entities in the same order, and the same polar words (more/less, before/after, ...).
Cheap and conservative: it can only turn a hit into a miss."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_TOKENS = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+(?:'[a-z]+)?")
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS |= {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
                 "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "dozen": 12,
                 "half": 0.5, "twice": 2, "double": 2, "triple": 3}
ORDINALS = {w: i + 1 for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split())}
NEGATIONS = frozenset("not no never none nothing nobody nowhere neither nor without cannot".split())
# Words that flip a question's meaning; synonyms share a label, opposites differ in the sign.
POLAR = {}
for _label, _plus, _minus in (
        ("amount", "more most", "less least fewer fewest"),
        ("size", "bigger biggest larger largest greater greatest big large huge", "smaller smallest small tiny"),
        ("height", "higher highest taller tallest high tall above", "lower lowest shorter shortest low below"),
        ("trend", "increase increases increasing raise rise grow gain", "decrease decreases decreasing reduce drop "
                                                                         "shrink lose"),
        ("time", "after later latest newest newer", "before earlier earliest oldest older"),
        ("extreme", "maximum max best", "minimum min worst"),
        ("speed", "faster fastest quick quickest", "slower slowest slow"),
        ("price", "expensive pricier priciest costly", "cheap cheaper cheapest inexpensive"),
        ("temperature", "hot hotter hottest warm warmer warmest", "cold colder coldest cool cooler coolest"),
        ("operation", "plus add sum adding added", "minus subtract difference subtracting subtracted"),
        ("scale", "multiply times product multiplied", "divide divided quotient"),
        ("direction", "buy buying import imports", "sell selling export exports"),
        ("truth", "true correct", "false wrong incorrect"),
        ("inclusion", "include including includes", "exclude excluding excludes"),
        ("encryption", "encrypt encode compress", "decrypt decode decompress"),
        ("switch", "enable enabled", "disable disabled"),
        ("order", "ascending", "descending reverse reversed")):
    POLAR |= {w: _label + "+" for w in _plus.split()}
    POLAR |= {w: _label + "-" for w in _minus.split()}
# Words of a closed class where each member asks something else (the season of a question about weather).
POLAR |= {w: f"season:{w}" for w in ("spring", "summer", "autumn", "fall", "winter")}
POLAR |= {w: f"meal:{w}" for w in ("breakfast", "lunch", "dinner")}
# Capitalized words that are not names (sentence openers, pronouns, question words).
_NOT_NAMES = frozenset(
    "what how why when where who whom which whose is are was were do does did can could should would will shall "
    "may might must i the a an please tell give explain describe list name show write compute calculate find "
    "define summarize translate in on of for and or but if my your our their his her its it this that these those "
    "there here hi hello hey let lets we you they he she me us them also then now so yes okay ok convert "
    "recommend plan suggest create make help could any".split())


@dataclass(frozen=True, slots=True)
class Signature:
    """What must agree between two prompts for one's answer to serve the other."""
    numbers: tuple
    negations: int
    names: tuple
    polar: tuple

    def agrees(self, other: "Signature") -> bool:
        return self == other


def _number(token: str):
    if token[0].isdigit():
        return float(token.replace(",", ""))
    lower = token.lower()
    return NUMBER_WORDS.get(lower, ORDINALS.get(lower))


def signature(text: str) -> Signature:
    tokens = _TOKENS.findall(text)
    numbers, names, negations, polar = [], [], 0, Counter()
    for token in tokens:
        lower = token.lower()
        value = _number(token)
        if value is not None:
            numbers.append(value)
        elif lower in NEGATIONS or lower.endswith("n't"):
            negations += 1
        elif lower in POLAR:
            polar[POLAR[lower]] += 1
        elif token[0].isupper() and lower.split("'")[0] not in _NOT_NAMES:
            names.append(lower.split("'")[0])
    return Signature(tuple(numbers), negations, tuple(names), tuple(sorted(polar.items())))
