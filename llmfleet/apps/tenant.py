"""Whose request this is, as tenancy decided it: scope["state"]["tenant"] ("team:<id>", "key:<id>" or "admin"),
set by TenancyMiddleware in front of the apps. Without tenancy every request belongs to one tenant, ""."""
from __future__ import annotations

from starlette.types import Scope

NO_TENANCY = ""


def tenant(scope: Scope) -> str:
    """The request's tenant; NO_TENANCY where no tenancy middleware runs in front."""
    return scope.get("state", {}).get("tenant", NO_TENANCY)
