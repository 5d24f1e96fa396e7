"""The cache's paraphrase set, built deterministically here (`python -m llmfleet.apps.cache.paraphrases` writes
data/paraphrases.jsonl): pairs of prompts that ask the same thing in other words (a cached answer may serve the
second), and near misses that must not share an answer: a changed number, a negation, swapped or replaced names,
an opposite word. Each row: {id, template, kind: paraphrase | near_miss, change, anchor, query, split: dev|test}.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "paraphrases.jsonl"
COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Kenya", "Norway", "Egypt", "Chile", "India", "Poland",
             "Vietnam", "Mexico", "Portugal", "Turkey", "Peru", "Sweden"]
CITIES = ["Paris", "Tokyo", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Dublin", "Oslo", "Cairo",
          "Lima", "Seoul", "Sydney", "Toronto", "Chicago", "Boston", "Denver"]
LANGUAGES = ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch", "Swedish", "Polish",
             "Turkish"]
BOOKS = ["Moby Dick", "Hamlet", "Dracula", "Frankenstein", "Ulysses", "Emma", "Beloved", "Middlemarch", "Rebecca",
         "Persuasion"]
PEOPLE = ["Alice", "Bob", "Carlos", "Dana", "Emil", "Fatima", "Grace", "Hiro", "Ines", "Jonas"]
PHRASES = ["good morning", "thank you very much", "where is the station", "I am hungry", "see you tomorrow",
           "how much does this cost"]
NUMBERS = [3, 5, 7, 12, 15, 20, 25, 40, 64, 100, 150, 250, 512, 1000]

# name -> (variants, slots, negations, opposites): variants ask the same thing; a negation or an opposite variant
# asks something else with the same slots. Slots: {name: pool}; "a"/"b" slots of one pool may be swapped.
TEMPLATES = {
    "capital": (["What is the capital of {country}?", "Which city is the capital of {country}?",
                 "Tell me the capital city of {country}.", "Name the capital of {country}."],
                {"country": COUNTRIES}, [], []),
    "train": (["How do I get from {a} to {b} by train?", "What is the best train route from {a} to {b}?",
               "Which trains go from {a} to {b}?", "Explain how to travel by rail from {a} to {b}."],
              {"a": CITIES, "b": CITIES}, ["How do I get from {a} to {b} without taking the train?"], []),
    "miles": (["Convert {n} miles to kilometers.", "How many kilometers are {n} miles?",
               "What is {n} miles in kilometers?", "Express {n} miles in kilometers."],
              {"n": NUMBERS}, [], []),
    "sum": (["What is {n} plus {m}?", "Calculate {n} plus {m}.", "Add {n} and {m}.", "What do you get if you add "
             "{n} and {m}?"], {"n": NUMBERS, "m": NUMBERS}, [], ["What is {n} minus {m}?"]),
    "translate": (["Translate '{phrase}' into {language}.", "How do you say '{phrase}' in {language}?",
                   "What is '{phrase}' in {language}?", "Give me the {language} for '{phrase}'."],
                  {"phrase": PHRASES, "language": LANGUAGES}, [], []),
    "author": (["Who wrote {book}?", "Who is the author of {book}?", "Which writer wrote {book}?",
                "Tell me who wrote the book {book}."], {"book": BOOKS}, [], []),
    "plot": (["Summarize the plot of {book}.", "Give me a short summary of {book}.",
              "What happens in {book}? Summarize it briefly.", "Briefly summarize the story of {book}."],
             {"book": BOOKS}, ["What does not happen in {book}?"], []),
    "itinerary": (["Plan a {n}-day trip to {city}.", "Suggest an itinerary for {n} days in {city}.",
                   "What should I do during {n} days in {city}?", "Make a {n} day travel plan for {city}."],
                  {"n": [2, 3, 4, 5, 7, 10], "city": CITIES}, [], []),
    "weather": (["What is the weather usually like in {city} in winter?", "How cold does {city} get in winter?",
                 "Describe the typical winter weather in {city}.", "What are winters like in {city}?"],
                {"city": CITIES}, [], ["What is the weather usually like in {city} in summer?"]),
    "bigger": (["Is {a} bigger than {b}?", "Is {a} larger than {b}?", "Does {a} have a greater area than {b}?",
                "Which is bigger, {a} or {b}? Is it {a}?"], {"a": COUNTRIES, "b": COUNTRIES},
               ["Is {a} not bigger than {b}?"], ["Is {a} smaller than {b}?"]),
    "email": (["Write an email to {person} asking to move our meeting to {day}.",
               "Draft an email to {person} requesting that our meeting be moved to {day}.",
               "Compose a message to {person} asking to reschedule our meeting to {day}.",
               "Help me write an email asking {person} to move the meeting to {day}."],
              {"person": PEOPLE, "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]},
              ["Write an email to {person} saying we should not move our meeting to {day}."], []),
    "python_list": (["Write a Python function that returns the {k} largest numbers in a list.",
                     "Give me Python code to get the {k} largest values from a list.",
                     "How do I find the {k} largest elements of a list in Python?",
                     "Python: return the {k} biggest numbers of a list."],
                    {"k": [2, 3, 5, 10, 20]}, [], ["Write a Python function that returns the {k} smallest numbers "
                                                   "in a list."]),
    "sort": (["How do I sort a list of records by one field in {lang}?",
              "What is the way to sort a list of records by a field in {lang}?",
              "In {lang}, how can I sort a list of records by one of their fields?",
              "Sort a list of records by a field in {lang}: how?"],
             {"lang": ["Python", "JavaScript", "Rust", "Java", "Go", "Ruby", "Kotlin", "Haskell"]}, [],
             ["How do I sort a list of records by one field in {lang} in descending order?"]),
    "boil": (["At what temperature does water boil at an altitude of {n} meters?",
              "What is the boiling point of water at {n} meters altitude?",
              "How hot must water be to boil at {n} meters above sea level?",
              "Water boiling point at {n} m elevation?"], {"n": [500, 1000, 1500, 2000, 3000, 4000, 5000]}, [], []),
    "population": (["What is the population of {city}?", "How many people live in {city}?",
                    "How many inhabitants does {city} have?", "Tell me the population of {city}."],
                   {"city": CITIES}, [], []),
    "timezone": (["What time is it in {a} when it is noon in {b}?", "If it is 12pm in {b}, what time is it in {a}?",
                  "When it's midday in {b}, what is the time in {a}?", "Noon in {b} is what time in {a}?"],
                 {"a": CITIES, "b": CITIES}, [], []),
    "recipe": (["Give me a recipe for {dish} for {n} people.", "How do I cook {dish} for {n} people?",
                "What is a good {dish} recipe that serves {n}?", "Recipe: {dish} for {n} people, please."],
               {"dish": ["lasagna", "risotto", "curry", "paella", "pancakes", "chili"], "n": [2, 4, 6, 8, 12]},
               ["Give me a recipe for {dish} for {n} people without cheese."], []),
    "explain": (["Explain how {thing} works in simple terms.", "Can you explain simply how {thing} works?",
                 "How does {thing} work? Keep it simple.", "Give me a simple explanation of how {thing} works."],
                {"thing": ["a vaccine", "a refrigerator", "public key encryption", "a jet engine", "a blockchain",
                           "photosynthesis", "a transistor", "compound interest"]},
                ["Explain why {thing} does not work in simple terms."], []),
    "loan": (["What is the monthly payment on a {n} dollar loan at {r} percent over {y} years?",
              "Calculate the monthly payment for a {n} dollar loan with {r}% interest for {y} years.",
              "How much would I pay per month on a {n} dollar loan at {r} percent for {y} years?",
              "Monthly installment of a {n} dollar loan, {r}% rate, {y} years?"],
             {"n": [5000, 10000, 20000, 50000], "r": [3, 4, 5, 6, 7], "y": [3, 5, 10, 15]}, [], []),
    "vegan": (["Is {food} vegan?", "Does {food} count as vegan?", "Can vegans eat {food}?",
               "Is {food} suitable for a vegan diet?"],
              {"food": ["honey", "tofu", "gelatin", "bread", "pasta", "chocolate", "wine", "sugar"]},
              ["Is {food} not vegan?"], []),
}


def _fill(pattern: str, slots: dict) -> str:
    return pattern.format(**slots)


def _draw(rng: random.Random, pools: dict) -> dict:
    slots = {name: rng.choice(pool) for name, pool in pools.items()}
    if "a" in slots and "b" in slots:
        while slots["b"] == slots["a"]:
            slots["b"] = rng.choice(pools["b"])
    if "n" in slots and "m" in slots:
        while slots["m"] == slots["n"]:
            slots["m"] = rng.choice(pools["m"])
    return slots


def meaning(template: str, slots: dict, pattern: str | None = None) -> str:
    """What a prompt asks: its template, its slots and, for a negated or opposite one, which."""
    return json.dumps([template, sorted(slots.items()), pattern])


def _changed(rng: random.Random, pools: dict, slots: dict) -> tuple[str, dict] | None:
    """The slots with one thing changed: swapped names, another number, another name."""
    if "a" in slots and "b" in slots and rng.random() < 0.6:
        return "swap", {**slots, "a": slots["b"], "b": slots["a"]}
    name = rng.choice(sorted(pools))
    other = rng.choice([v for v in pools[name] if v != slots[name]])
    if other in slots.values():
        return None
    return ("number" if isinstance(other, int) else "entity"), {**slots, name: other}


def pairs(per_template: int = 26, seed: int = 0) -> list[dict]:
    """`per_template` paraphrase pairs and as many near misses for each template, in a fixed order."""
    rng, rows, seen = random.Random(seed), [], set()
    for name, (variants, pools, negations, opposites) in TEMPLATES.items():
        made = 0
        while made < per_template:
            slots = _draw(rng, pools)
            first, second = rng.sample(range(len(variants)), 2)
            anchor, query = _fill(variants[first], slots), _fill(variants[second], slots)
            miss = _near_miss(rng, name, variants, pools, negations + opposites, negations, slots, anchor)
            if (anchor, query) in seen or (anchor, miss["query"]) in seen:
                continue  # every pair once: a repeated pair would count twice
            seen |= {(anchor, query), (anchor, miss["query"])}
            rows.append({"template": name, "kind": "paraphrase", "change": None, "anchor": anchor, "query": query,
                         "anchor_meaning": meaning(name, slots), "query_meaning": meaning(name, slots)})
            rows.append(miss)
            made += 1
    for n, row in enumerate(rows):
        row["id"] = n
        row["split"] = "dev" if n % 4 < 2 else "test"  # pairs alternate: half of each template in each split
    return rows


def _near_miss(rng, name, variants, pools, others, negations, slots, anchor) -> dict:
    """A query close to `anchor` in words that asks something else."""
    while True:
        if others and (not pools or rng.random() < 0.4):
            pattern = rng.choice(others)
            change, query, asks = ("negation" if pattern in negations else "opposite", _fill(pattern, slots),
                                   meaning(name, slots, pattern))
        else:
            changed = _changed(rng, pools, slots)
            if changed is None:
                continue
            change, new_slots = changed
            query, asks = _fill(rng.choice(variants), new_slots), meaning(name, new_slots)
        if query != anchor:
            return {"template": name, "kind": "near_miss", "change": change, "anchor": anchor, "query": query,
                    "anchor_meaning": meaning(name, slots), "query_meaning": asks}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the semantic cache's paraphrase set")
    parser.add_argument("--out", default=str(DATA))
    parser.add_argument("--per-template", type=int, default=26)
    args = parser.parse_args(argv)
    rows = pairs(args.per_template)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(rows)} pairs to {args.out}")


if __name__ == "__main__":
    main()
