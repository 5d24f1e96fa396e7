"""Spend for the console, from tenancy's tables: the window's spend per key, team and model with its cost per 1M
tokens, spend per minute by model, and every key's and team's budget with the alerts they raise.

Alerts: `soft_budget` when a key's period spend reached its soft budget, `near_budget` past 80% of max_budget,
`budget_reached` at max_budget (requests are then refused).
"""
from __future__ import annotations

from sqlalchemy import Integer, cast, func, select

from llmfleet.tenancy.schema import keys, spend_logs, teams

NEAR_BUDGET = 0.8


async def spend_view(store, start: float, now: float) -> dict:
    """Spend since `start` (seconds since the epoch), and budgets as they stand at `now`."""
    async with store.engine.connect() as conn:
        groups = {group: [dict(r._mapping) for r in await conn.execute(_grouped(group, start))]
                  for group in ("key_id", "team_id", "model")}
        minutes = [dict(r._mapping) for r in await conn.execute(_per_minute(conn.dialect.name, start))]
        key_rows = [dict(r._mapping) for r in await conn.execute(select(
            keys.c.key_id, keys.c.key_alias, keys.c.key_hint, keys.c.team_id, keys.c.spend, keys.c.period_spend,
            keys.c.period_index, keys.c.budget_duration_s, keys.c.max_budget, keys.c.soft_budget, keys.c.blocked))]
        team_rows = [dict(r._mapping) for r in await conn.execute(select(
            teams.c.team_id, teams.c.team_alias, teams.c.spend, teams.c.period_spend, teams.c.period_index,
            teams.c.budget_duration_s, teams.c.max_budget, teams.c.soft_budget))]
    names = {row["key_id"]: row["key_alias"] or row["key_hint"] for row in key_rows}
    for row in groups["key_id"]:
        row["name"] = names.get(row["key_id"], row["key_id"])
    budgets = [_budget("key", row["key_id"], names[row["key_id"]], row, now) for row in key_rows] + [
        _budget("team", row["team_id"], row["team_alias"] or row["team_id"], row, now) for row in team_rows]
    return {"since": start, "by_key": [_priced(r) for r in groups["key_id"]],
            "by_team": [_priced(r) for r in groups["team_id"]], "by_model": [_priced(r) for r in groups["model"]],
            "per_minute": minutes, "budgets": budgets, "alerts": [a for b in budgets for a in _alerts(b)],
            "total": sum(r["spend"] or 0.0 for r in groups["model"])}


def _grouped(group: str, start: float):
    column = spend_logs.c[group]
    return (select(column.label(group), func.count().label("requests"), func.sum(spend_logs.c.cost).label("spend"),
                   func.sum(spend_logs.c.prompt_tokens).label("prompt_tokens"),
                   func.sum(spend_logs.c.completion_tokens).label("completion_tokens"))
            .where(spend_logs.c.started_at >= start).group_by(column).order_by(func.sum(spend_logs.c.cost).desc()))


def _per_minute(dialect: str, start: float):
    """Spend per whole minute (epoch-aligned) and model: SQLite's integer cast truncates, PostgreSQL's rounds."""
    minute = spend_logs.c.started_at / 60
    index = func.floor(minute) if dialect == "postgresql" else cast(minute, Integer)
    bucket = cast(index, Integer).label("minute")
    return (select(bucket, spend_logs.c.model, func.sum(spend_logs.c.cost).label("spend"),
                   func.sum(spend_logs.c.prompt_tokens + spend_logs.c.completion_tokens).label("tokens"))
            .where(spend_logs.c.started_at >= start).group_by(bucket, spend_logs.c.model).order_by(bucket))


def _priced(row: dict) -> dict:
    tokens = (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0)
    spend = row["spend"] or 0.0
    return {**row, "spend": spend, "tokens": tokens, "cost_per_1m": spend * 1e6 / tokens if tokens else None}


def _budget(kind: str, ident: str, name: str, row: dict, now: float) -> dict:
    """The spend a budget is held against: the current period's (a stored period that has passed counts 0)."""
    duration = row["budget_duration_s"]
    current = int(now // duration) if duration else 0
    period_spend = (row["period_spend"] or 0.0) if (row["period_index"] or 0) == current else 0.0
    return {"kind": kind, "id": ident, "name": name, "spend": row["spend"] or 0.0, "period_spend": period_spend,
            "budget_duration_s": duration, "max_budget": row["max_budget"], "soft_budget": row["soft_budget"],
            "used": period_spend / row["max_budget"] if row["max_budget"] else None,
            "blocked": bool(row.get("blocked", False))}


def _alerts(budget: dict) -> list[dict]:
    found, spend, hard, soft = [], budget["period_spend"], budget["max_budget"], budget["soft_budget"]
    if hard is not None and spend >= hard:
        found.append(("budget_reached", f"spent ${spend:.4f} of its ${hard:.4f} budget: requests are refused"))
    elif hard is not None and spend >= NEAR_BUDGET * hard:
        found.append(("near_budget", f"spent ${spend:.4f}, {100 * spend / hard:.0f}% of its ${hard:.4f} budget"))
    if soft is not None and spend >= soft:
        found.append(("soft_budget", f"spent ${spend:.4f}, past its soft budget ${soft:.4f}"))
    return [{"kind": kind, "subject": f"{budget['kind']} {budget['name']}", "message": message}
            for kind, message in found]
