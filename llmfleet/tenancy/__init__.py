"""Tenancy: virtual keys, teams and users, rate limits, budgets with reservations, cost per request and spend logs,
as pure-ASGI middleware that mounts on `llmfleet serve` and on the gateway alike. Imports no torch and nothing of
the engine: it speaks HTTP and OpenAI's JSON only.

The names below load on first use, so that a CLI importing `llmfleet.tenancy.flags` stays light."""
from __future__ import annotations

__all__ = ["TenancyConfig", "TenancyMiddleware"]


def __getattr__(name: str):
    if name == "TenancyConfig":
        from llmfleet.tenancy.config import TenancyConfig
        return TenancyConfig
    if name == "TenancyMiddleware":
        from llmfleet.tenancy.middleware import TenancyMiddleware
        return TenancyMiddleware
    raise AttributeError(f"module 'llmfleet.tenancy' has no attribute {name!r}")
