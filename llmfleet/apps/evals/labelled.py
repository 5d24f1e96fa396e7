"""A small labelled set for measuring a judge, built deterministically here: questions with a reference answer
and a candidate answer that is right (in other words) or wrong (a near miss: off by one, another city, another
unit), labelled `correct`; and pairs of one right and one wrong answer labelled with the better one."""
from __future__ import annotations

import random

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Norway": "Oslo", "Peru": "Lima",
            "Portugal": "Lisbon", "Austria": "Vienna"}
COLORS = {"the sky on a clear day": "blue", "grass": "green", "snow": "white", "a ripe banana": "yellow",
          "coal": "black", "a ripe tomato": "red"}


def _arithmetic(rng: random.Random) -> tuple[str, str, str, str]:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    right = a + b
    wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
    return f"What is {a} + {b}?", str(right), f"{a} + {b} = {right}.", f"{a} + {b} = {wrong}."


def _capital(rng: random.Random) -> tuple[str, str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    other = rng.choice([c for k, c in sorted(CAPITALS.items()) if k != country])
    right = CAPITALS[country]
    return (f"What is the capital of {country}?", right, f"The capital of {country} is {right}.",
            f"The capital of {country} is {other}.")


def _color(rng: random.Random) -> tuple[str, str, str, str]:
    thing = rng.choice(sorted(COLORS))
    other = rng.choice([c for k, c in sorted(COLORS.items()) if k != thing])
    return f"What color is {thing}?", COLORS[thing], f"It is {COLORS[thing]}.", f"It is {other}."


def labelled_set(size: int = 48, seed: int = 0) -> list[dict]:
    """`size` graded rows (half right, half wrong) and `size // 2` pairs, in a fixed order."""
    rng, rows = random.Random(seed), []
    makers = (_arithmetic, _capital, _color)
    for i in range(size // 2):
        question, reference, right, wrong = makers[i % len(makers)](rng)
        rows.append({"id": f"g{2 * i}", "prompt": question, "reference": reference, "response": right,
                     "label": True})
        rows.append({"id": f"g{2 * i + 1}", "prompt": question, "reference": reference, "response": wrong,
                     "label": False})
        a_is_right = rng.random() < 0.5
        rows.append({"id": f"p{i}", "prompt": question, "reference": reference,
                     "response_a": right if a_is_right else wrong, "response_b": wrong if a_is_right else right,
                     "preferred": "a" if a_is_right else "b"})
    return rows
