"""Tenancy: virtual keys, teams and users, rate limits, budgets with reservations, cost per request and spend logs,
as pure-ASGI middleware that mounts on `llmfleet serve` and on the gateway alike. Imports no torch and nothing of
the engine: it speaks HTTP and OpenAI's JSON only."""
from llmfleet.tenancy.config import TenancyConfig
from llmfleet.tenancy.middleware import TenancyMiddleware

__all__ = ["TenancyConfig", "TenancyMiddleware"]
