"""Request logs out to a dataset (`llmfleet logs export`): every sealed record opened with the log key, filtered by
time, key and team, flattened to one row per request (prompt, response, model, key/team/user ids, tokens, cost,
times) and written as JSON Lines or Parquet (pyarrow), for evaluation sets and distillation."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmfleet.tenancy.request_log import log_files, read_records

FORMATS = ("jsonl", "parquet")
COLUMNS = (("request_id", "string"), ("started_at", "string"), ("ended_at", "string"), ("key_id", "string"),
           ("team_id", "string"), ("user_id", "string"), ("model", "string"), ("status", "int64"),
           ("prompt_tokens", "int64"), ("completion_tokens", "int64"), ("cost", "float64"), ("prompt", "string"),
           ("response", "string"), ("request_json", "string"), ("response_json", "string"))


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records to export; None means any."""
    since: float | None = None
    until: float | None = None
    key_id: str | None = None
    team_id: str | None = None

    def wants(self, record: dict) -> bool:
        started = record.get("started_at") or 0.0
        return ((self.since is None or started >= self.since) and (self.until is None or started < self.until)
                and (self.key_id is None or record.get("key_id") == self.key_id)
                and (self.team_id is None or record.get("team_id") == self.team_id))


def records(folder: str | Path, key: bytes, selection: Selection) -> Iterator[dict]:
    """The selected records of every log file in `folder`, oldest file first."""
    for path in log_files(folder):
        yield from (r for r in read_records(path, key) if selection.wants(r))


def row(record: dict) -> dict:
    """One flat row: the prompt as text (chat messages as "role: content" lines), the answer's text."""
    request, response = record.get("request") or {}, record.get("response") or {}
    return {"request_id": record.get("request_id"), "started_at": _iso(record.get("started_at")),
            "ended_at": _iso(record.get("ended_at")), "key_id": record.get("key_id"),
            "team_id": record.get("team_id"), "user_id": record.get("user_id"), "model": record.get("model"),
            "status": record.get("status"), "prompt_tokens": record.get("prompt_tokens"),
            "completion_tokens": record.get("completion_tokens"), "cost": record.get("cost"),
            "prompt": _prompt(request), "response": _answer(response),
            "request_json": json.dumps(request, ensure_ascii=False),
            "response_json": json.dumps(response, ensure_ascii=False)}


def export(folder: str | Path, key: bytes, selection: Selection, fmt: str, out: str | Path) -> int:
    """Writes the selected rows to `out` as `fmt`; returns how many."""
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)} expected, got {fmt!r}")
    rows = [row(r) for r in records(folder, key, selection)]
    if fmt == "jsonl":
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return len(rows)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


def _prompt(request: dict) -> str:
    if isinstance(request.get("messages"), list):
        return "\n".join(f"{m.get('role', 'user')}: {_text(m.get('content'))}" for m in request["messages"]
                         if isinstance(m, dict))
    prompt = request.get("prompt")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _answer(response: dict) -> str:
    """The first choice's text: a chat message's content, a completion's text, or a stream's gathered text."""
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    if isinstance(first.get("message"), dict):
        return _text(first["message"].get("content"))
    return first.get("text") if isinstance(first.get("text"), str) else ""
