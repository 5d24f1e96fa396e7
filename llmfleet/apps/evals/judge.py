"""LLM-as-judge over any OpenAI-compatible chat endpoint (a served model or an external one): rubric scores as
structured output (response_format json_schema), and pairwise preference asked in both orders, a verdict given
only when both orders agree (position bias otherwise decides)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from llmfleet.apps.endpoint import Endpoint, EndpointError
from llmfleet.apps.evals.rubric import Rubric

JUDGE_SYSTEM = ("You are an impartial judge of answers to questions. Grade strictly by the criteria; answer only "
                "with the JSON asked for.")
PAIR_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
               "required": ["winner"], "additionalProperties": False}


@dataclass(frozen=True, slots=True)
class Preference:
    verdict: str           # "a", "b", "tie", or "inconsistent" (the two orders disagreed: no verdict)
    first: str             # the winner asked with a first ("a", "b" or "tie")
    second: str            # ... and with b first, mapped back to a/b


def _format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def score_messages(rubric: Rubric, prompt: str, response: str, reference: str | None) -> list[dict]:
    parts = [f"Question:\n{prompt}"]
    if reference:
        parts.append(f"Reference answer:\n{reference}")
    parts.append(f"Answer to grade:\n{response}")
    parts.append(f"Criteria:\n{rubric.describe()}\n\nGive each criterion an integer score on its scale.")
    system = JUDGE_SYSTEM + (f"\n{rubric.instructions}" if rubric.instructions else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def pair_messages(prompt: str, first: str, second: str, reference: str | None) -> list[dict]:
    reference_part = f"Reference answer:\n{reference}\n\n" if reference else ""
    text = (f"Question:\n{prompt}\n\n{reference_part}Answer A:\n{first}\n\nAnswer B:\n{second}\n\n"
            "Which answer is better: A, B, or tie?")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


class Judge:
    """`model` at `endpoint` judges; `max_tokens` bounds each verdict."""

    def __init__(self, endpoint: Endpoint, model: str | None, max_tokens: int = 128):
        self.endpoint, self.model, self.max_tokens = endpoint, model, max_tokens

    async def _ask(self, messages: list[dict], name: str, schema: dict) -> dict:
        text = await self.endpoint.chat(self.model, messages, temperature=0, max_tokens=self.max_tokens,
                                        response_format=_format(name, schema))
        try:
            answer = json.loads(text)
        except ValueError:
            raise EndpointError(f"the judge answered no JSON: {text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise EndpointError(f"the judge answered {text[:200]!r}, not an object")
        return answer

    async def score(self, rubric: Rubric, prompt: str, response: str, reference: str | None = None) -> dict:
        """{criterion: score}; EndpointError when the judge fails or leaves the scale."""
        answer = await self._ask(score_messages(rubric, prompt, response, reference), "rubric_scores",
                                 rubric.schema())
        scores = {}
        for c in rubric.criteria:
            value = answer.get(c.name)
            if not isinstance(value, int) or not c.low <= value <= c.high:
                raise EndpointError(f"the judge gave {c.name}={value!r}, outside [{c.low}, {c.high}]")
            scores[c.name] = value
        return scores

    async def compare(self, prompt: str, a: str, b: str, reference: str | None = None) -> Preference:
        """Asked with a first, then with b first; the verdict stands only when both orders name the same."""
        first = await self._winner(pair_messages(prompt, a, b, reference), {"A": "a", "B": "b"})
        second = await self._winner(pair_messages(prompt, b, a, reference), {"A": "b", "B": "a"})
        return Preference(first if first == second else "inconsistent", first, second)

    async def _winner(self, messages: list[dict], mapping: dict) -> str:
        answer = await self._ask(messages, "preference", PAIR_SCHEMA)
        winner = answer.get("winner")
        if winner not in ("A", "B", "tie"):
            raise EndpointError(f"the judge named winner {winner!r}")
        return mapping.get(winner, "tie")
