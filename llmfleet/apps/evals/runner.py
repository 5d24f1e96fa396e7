"""Judging a file of rows: each row's rubric scores (rows with `response`) or pairwise verdict (rows with
`response_a` and `response_b`), a few at a time, and the summary: mean score per criterion, and where rows carry
labels (`label`: the response is correct; `preferred`: "a" or "b") the judge's agreement with them.

Rows come from `llmfleet logs export` (prompt, response, request_id) or any JSONL with prompt/question,
response/answer, reference."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from llmfleet.apps.endpoint import EndpointError
from llmfleet.apps.evals.judge import Judge
from llmfleet.apps.evals.rubric import Rubric


def _field(row: dict, *names: str) -> str | None:
    return next((row[n] for n in names if isinstance(row.get(n), str)), None)


async def judge_row(judge: Judge, rubric: Rubric, row: dict) -> dict:
    prompt = _field(row, "prompt", "question") or ""
    reference = _field(row, "reference", "reference_answer")
    out = {k: row[k] for k in ("id", "request_id", "label", "preferred") if k in row}
    try:
        if "response_a" in row and "response_b" in row:
            verdict = await judge.compare(prompt, row["response_a"], row["response_b"], reference)
            out.update(verdict=verdict.verdict, first=verdict.first, second=verdict.second)
        else:
            scores = await judge.score(rubric, prompt, _field(row, "response", "answer") or "", reference)
            out.update(scores=scores, score=_normalized(rubric, scores))
    except EndpointError as exc:
        out["error"] = str(exc)
    return out


def _normalized(rubric: Rubric, scores: dict) -> float:
    """The mean score mapped to [0, 1] (0: every criterion at its low end)."""
    parts = [(scores[c.name] - c.low) / (c.high - c.low) for c in rubric.criteria]
    return sum(parts) / len(parts)


async def judge_rows(judge: Judge, rubric: Rubric, rows: Iterable[dict], concurrency: int = 4) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> dict:
        async with gate:
            return await judge_row(judge, rubric, row)

    return await asyncio.gather(*(one(row) for row in rows))


def summary(rubric: Rubric, results: list[dict], pass_score: float = 0.5) -> dict:
    """Means, error count, and agreement with labels: a scored row counts as judged correct when its normalized
    score is above `pass_score`; a pair agrees when its verdict names the preferred answer."""
    scored = [r for r in results if "scores" in r]
    pairs = [r for r in results if "verdict" in r]
    out = {"rows": len(results), "errors": sum("error" in r for r in results), "scored": len(scored),
           "pairs": len(pairs)}
    if scored:
        out["mean"] = {c.name: sum(r["scores"][c.name] for r in scored) / len(scored) for c in rubric.criteria}
    labelled = [r for r in scored if isinstance(r.get("label"), bool)]
    if labelled:
        agree = sum((r["score"] > pass_score) == r["label"] for r in labelled)
        out["label_agreement"] = agree / len(labelled)
        out["labelled_rows"] = len(labelled)
    preferred = [r for r in pairs if r.get("preferred") in ("a", "b")]
    if preferred:
        decided = [r for r in preferred if r["verdict"] in ("a", "b")]
        out["pair_decided_rate"] = len(decided) / len(preferred)
        out["pair_agreement_decided"] = (sum(r["verdict"] == r["preferred"] for r in decided) / len(decided)
                                         if decided else None)
        out["pair_agreement_all"] = sum(r["verdict"] == r["preferred"] for r in preferred) / len(preferred)
    return out


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"input: {path} must hold one JSON object a line")
    return rows
