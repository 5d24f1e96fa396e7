"""Prompt-injection detection: a logistic-regression classifier over word and character n-grams, trained (in pure
Python, about a second, once per process) on the labelled prompts in data/injection_train.jsonl, plus a few rules
for the unmistakable shapes (chat-template role tags, "ignore ... previous instructions", "reveal ... system
prompt"). A long prompt is scored by its windows, so one injected sentence in a document still counts.

`score(text)` is the probability that `text` holds an injection: 1 - (1 - p_model) * (1 - p_rules).
scripts/eval_injection.py reports precision and recall on the held-out set (data/injection_heldout.jsonl).
"""
from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
WINDOW_CHARS = 400  # a prompt is scored by windows of about this many characters (cut at sentence ends)
RULE_CONFIDENCE = 0.9
_WORD = re.compile(r"[a-z0-9']+|[<>\[\]|#/]+")
_SENTENCE_END = re.compile(r"(?<=[.!?\n])\s+")
_RULES = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"<\|?im_start\|?>|</?(?:system|assistant)>|\[system\]|^\s*system\s*:",
    r"\b(?:ignore|disregard|forget|override|bypass|discard|set aside)\b[\w\s,'-]{0,40}"
    r"\b(?:previous|prior|above|earlier|preceding|original|all|your)\b[\w\s,'-]{0,25}"
    r"\b(?:instructions?|rules|directives|guidelines|prompt|polic(?:y|ies)|restrictions|guardrails)\b",
    r"\b(?:reveal|print|show|output|repeat|leak|dump|paste|display)\b[\w\s,'-]{0,30}"
    r"\b(?:system|hidden|initial|secret|original|confidential)\s+(?:prompt|instructions?|message|configuration)\b",
    r"\bdo anything now\b|\byou (?:have been|are now) jailbroken\b",
))


def features(text: str) -> set[str]:
    """Word unigrams and bigrams, and character 4-grams of the lower-cased words."""
    words = _WORD.findall(text.lower())
    found = {f"w:{w}" for w in words}
    found.update(f"b:{a} {b}" for a, b in zip(words, words[1:]))
    for word in words:
        padded = f" {word} "
        found.update(f"c:{padded[i:i + 4]}" for i in range(len(padded) - 3))
    return found


@dataclass(frozen=True, slots=True)
class Model:
    weights: dict[str, float]
    bias: float

    def probability(self, text: str) -> float:
        z = self.bias + sum(self.weights.get(f, 0.0) for f in features(text))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def train(rows: list[dict], epochs: int = 12, rate: float = 0.5, l2: float = 1e-4, seed: int = 0) -> Model:
    """Logistic regression by AdaGrad over binary features; deterministic for a seed."""
    examples = [(features(r["text"]), r["label"]) for r in rows]
    weights: dict[str, float] = {}
    squares: dict[str, float] = {}
    bias, bias_square = 0.0, 1e-8
    order = list(range(len(examples)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            feats, label = examples[i]
            z = bias + sum(weights.get(f, 0.0) for f in feats)
            grad = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))) - label
            bias_square += grad * grad
            bias -= rate * grad / math.sqrt(bias_square)
            for f in feats:
                g = grad + l2 * weights.get(f, 0.0)
                squares[f] = squares.get(f, 1e-8) + g * g
                weights[f] = weights.get(f, 0.0) - rate * g / math.sqrt(squares[f])
    return Model(weights, bias)


def load_rows(name: str) -> list[dict]:
    with open(DATA / f"injection_{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@functools.lru_cache(maxsize=1)
def default_model() -> Model:
    """The model trained on the packaged training set (once per process)."""
    return train(load_rows("train"))


def rule_hits(text: str) -> int:
    return sum(1 for rule in _RULES if rule.search(text))


def windows(text: str) -> list[str]:
    """`text` cut at sentence ends into windows of about WINDOW_CHARS (a window never splits a sentence)."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    out, current = [], ""
    for sentence in _SENTENCE_END.split(text):
        if current and len(current) + len(sentence) > WINDOW_CHARS:
            out.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    return out + ([current] if current else [])


def score(text: str, model: Model | None = None, use_model: bool = True, use_rules: bool = True) -> float:
    """The probability that `text` carries a prompt injection (the highest of its windows)."""
    model = model or (default_model() if use_model else None)
    best = 0.0
    for window in windows(text):
        p_model = model.probability(window) if use_model else 0.0
        p_rules = RULE_CONFIDENCE if use_rules and rule_hits(window) else 0.0
        best = max(best, 1.0 - (1.0 - p_model) * (1.0 - p_rules))
    return best
