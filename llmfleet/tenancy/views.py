"""How admin answers show rows (a key's hash never leaves the database) and read dates from query strings."""
from __future__ import annotations

import datetime as dt
import math

from llmfleet.tenancy.admin_models import metadata_with_model_limits
from llmfleet.tenancy.errors import TenancyError

HIDDEN = frozenset({"key_hash", "period_index"})
LIMIT_FIELDS = ("models", "max_budget", "soft_budget", "rpm_limit", "tpm_limit", "max_parallel_requests", "metadata")


def limit_values(req, budget_duration_s: float | None, now: float) -> dict:
    """The columns keys, teams and users share, from a validated admin body."""
    values = {name: getattr(req, name) for name in LIMIT_FIELDS}
    values["metadata"] = metadata_with_model_limits(req, values["metadata"])
    return {**values, "budget_duration_s": budget_duration_s,
            "spend": 0.0, "period_spend": 0.0, "period_index": 0, "created_at": now}


def row_view(row) -> dict:
    view = {k: v for k, v in dict(row).items() if k not in HIDDEN}
    for name in ("created_at", "updated_at", "expires_at", "started_at", "ended_at"):
        if view.get(name) is not None:
            view[name] = _iso(view[name])
    return view


def key_view(row) -> dict:
    view = row_view(row)
    view["key_name"] = view.pop("key_hint", None)
    view["expires"] = view.pop("expires_at", None)
    view["budget_duration"] = view.pop("budget_duration_s", None)
    return view


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


def date_param(query: dict, name: str) -> float | None:
    """Seconds since the epoch from an ISO date or date-time (UTC unless it says otherwise) or a number."""
    text = query.get(name)
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None and math.isfinite(seconds):
        return seconds
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TenancyError(400, f"{name}: an ISO date (2026-12-01) or date-time expected", "invalid_value",
                           param=name) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()
