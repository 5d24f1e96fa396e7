"""The admin API's request bodies: pydantic models that refuse unknown fields, out-of-range numbers, infinities,
and (before them) strings a database could not store (NUL characters, lone surrogates)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmfleet.tenancy.config import INJECTION_ACTIONS, PII_ACTIONS
from llmfleet.tenancy.errors import TenancyError

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=256)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Dollars = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Duration = Annotated[str, StringConstraints(max_length=16)] | Annotated[int, Field(gt=0, le=10**10)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Body):
    models: Annotated[list[Name], Field(max_length=256)] = []
    max_budget: Dollars | None = None
    budget_duration: Duration | None = None
    soft_budget: Dollars | None = None
    rpm_limit: Count | None = None
    tpm_limit: Count | None = None
    max_parallel_requests: Count | None = None
    model_rpm_limit: Annotated[dict[Name, Count], Field(max_length=256)] | None = None  # kept in metadata
    model_tpm_limit: Annotated[dict[Name, Count], Field(max_length=256)] | None = None
    metadata: dict = {}


MODEL_LIMITS = ("model_rpm_limit", "model_tpm_limit")


def metadata_with_model_limits(body: BaseModel, metadata: dict | None) -> dict:
    """`metadata` with the body's per-model limits (top-level fields, as LiteLLM takes them) written into it."""
    merged = dict(metadata or {})
    for name in MODEL_LIMITS:
        if getattr(body, name, None) is not None:
            merged[name] = getattr(body, name)
    return merged


def check_metadata(body: BaseModel) -> None:
    meta = getattr(body, "metadata", None) or {}
    action = meta.get("pii_action")
    if action is not None and action not in PII_ACTIONS:
        raise TenancyError(400, f"metadata.pii_action: one of {', '.join(PII_ACTIONS)} expected",
                           "invalid_value", param="metadata.pii_action")
    action = meta.get("injection_action")
    if action is not None and action not in INJECTION_ACTIONS:
        raise TenancyError(400, f"metadata.injection_action: one of {', '.join(INJECTION_ACTIONS)} expected",
                           "invalid_value", param="metadata.injection_action")
    if meta.get("role") not in (None, "admin"):  # "admin": the key opens the operator console
        raise TenancyError(400, "metadata.role: \"admin\" or absent expected", "invalid_value",
                           param="metadata.role")
    for name in MODEL_LIMITS:
        limits = meta.get(name)
        if limits is not None and not (isinstance(limits, dict) and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in limits.values())):
            raise TenancyError(400, f"metadata.{name}: a mapping of model name to a count >= 0 expected",
                               "invalid_value", param=f"metadata.{name}")


class KeyGenerate(Limits):
    team_id: Name | None = None
    user_id: Name | None = None
    key_alias: Text | None = None
    duration: Duration | None = None


class KeyUpdate(KeyGenerate):
    key: Text | None = None
    key_id: Name | None = None
    blocked: bool | None = None


class KeyDelete(_Body):
    keys: Annotated[list[Text], Field(max_length=1000)] = []
    key_ids: Annotated[list[Name], Field(max_length=1000)] = []


class TeamNew(Limits):
    team_id: Name | None = None
    team_alias: Text | None = None


class UserNew(Limits):
    user_id: Name | None = None
    user_email: Text | None = None
    team_id: Name | None = None


def check_strings(value, path: str = "body") -> None:
    """400 for a string no database stores: a NUL character or a lone surrogate, anywhere in the body."""
    if isinstance(value, str):
        if "\x00" in value or not _encodes(value):
            raise TenancyError(400, f"{path}: strings may hold neither NUL characters nor lone surrogates",
                               "invalid_value", param=path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_strings(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            check_strings(k, path)
            check_strings(item, f"{path}.{k}")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
