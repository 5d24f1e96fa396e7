"""What the request path knows of a key and its team: plain slotted records, cached by key hash."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subject:
    """One party a request is charged to (its key, its team): limits, budget and the spend of its period."""
    name: str                          # "key:<key_id>" or "team:<team_id>": the namespace of its counters
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: float | None = None
    budget_duration_s: float | None = None
    period_spend: float = 0.0          # spend stored for period `period_index`
    period_index: int = 0

    def period(self, now: float) -> int:
        """The budget period `now` falls in: periods are aligned to the epoch; no duration means one period."""
        return int(now // self.budget_duration_s) if self.budget_duration_s else 0

    def period_end(self, now: float) -> float:
        return (self.period(now) + 1) * self.budget_duration_s if self.budget_duration_s else math.inf

    def spent_in(self, period: int) -> float:
        return self.period_spend if period == self.period_index else 0.0


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_hash: str
    key_id: str
    team_id: str | None
    user_id: str | None
    models: tuple[str, ...]
    expires_at: float | None
    blocked: bool
    soft_budget: float | None
    subjects: tuple[Subject, ...]      # the key's own first, then its team's
    pii_action: str | None = None      # the key's own PII guard action (metadata.pii_action), else the config's
    log_requests: bool = False         # metadata.log_requests: its requests and answers go to the request log
    model_limits: tuple[tuple[str, int | None, int | None], ...] = ()  # (model, rpm, tpm) of this key per model
    injection_action: str | None = None  # the key's own prompt-injection action (metadata.injection_action)
    role: str | None = None            # metadata.role: "admin" opens the operator console (not the admin API)
    groups: tuple[str, ...] = ()       # metadata.groups: the groups whose documents the key's user may read

    def allows(self, model: str | None) -> bool:
        return not self.models or model in self.models

    def subjects_for(self, model: str | None) -> tuple[Subject, ...]:
        """Who a request for `model` is charged to: the key, its team, and the key's limits for that model."""
        for name, rpm, tpm in self.model_limits:
            if name == model:
                return self.subjects + (Subject(f"{self.subjects[0].name}:model:{name}", rpm, tpm),)
        return self.subjects

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def subject(prefix: str, ident: str, row) -> Subject:
    return Subject(f"{prefix}:{ident}", row.rpm_limit, row.tpm_limit, row.max_parallel_requests, row.max_budget,
                   row.budget_duration_s, row.period_spend or 0.0, row.period_index or 0)


def key_record(key_row, team_row) -> KeyRecord:
    subjects = (subject("key", key_row.key_id, key_row),)
    if team_row is not None:
        subjects += (subject("team", team_row.team_id, team_row),)
    models = tuple(key_row.models or ()) or tuple(getattr(team_row, "models", None) or ())
    meta = key_row.metadata or {}
    pii_action = meta.get("pii_action")
    return KeyRecord(key_row.key_hash, key_row.key_id, key_row.team_id, key_row.user_id, models,
                     key_row.expires_at, bool(key_row.blocked), key_row.soft_budget, subjects,
                     pii_action if isinstance(pii_action, str) else None, meta.get("log_requests") is True,
                     model_limits(meta),
                     meta["injection_action"] if isinstance(meta.get("injection_action"), str) else None,
                     meta["role"] if isinstance(meta.get("role"), str) else None,
                     _groups(meta.get("groups")))


def _groups(value) -> tuple[str, ...]:
    return tuple(g for g in value if isinstance(g, str) and g) if isinstance(value, list) else ()


def model_limits(meta: dict) -> tuple[tuple[str, int | None, int | None], ...]:
    """(model, rpm, tpm) from metadata's `model_rpm_limit` / `model_tpm_limit` mappings (LiteLLM's names)."""
    rpm = meta.get("model_rpm_limit") if isinstance(meta.get("model_rpm_limit"), dict) else {}
    tpm = meta.get("model_tpm_limit") if isinstance(meta.get("model_tpm_limit"), dict) else {}
    return tuple((name, rpm.get(name), tpm.get(name)) for name in sorted(set(rpm) | set(tpm)))
