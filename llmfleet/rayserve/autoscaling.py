"""Autoscaling a version's engine replicas under Ray Serve, on llmfleet's signals.

Ray Serve's controller calls `EngineAutoscalingPolicy` (a class-callable custom policy, instantiated once with
`policy_kwargs`) every control-loop tick with an AutoscalingContext. Each engine replica reports its own load through
`record_autoscaling_stats` (replica.py): sequences waiting for a first token, and the KV cache's used fraction;
Ray averages each over `look_back_period_s`. The desired replica count is the largest of three target-tracking
answers, each "the count at which this signal would sit at its target":

    ongoing:  total ongoing requests (Ray's own count, queued at handles included) / target_ongoing_requests
    waiting:  total waiting sequences / target_waiting_requests
    kv:       current replicas x mean KV usage / target_kv_usage

Ray then applies what it applies to every policy: upscale_delay_s / downscale_delay_s (a change must be wanted that
long, continuously), upscaling / downscaling factors, and min / max replicas. So the fleet.yaml `replicas` settings
map one to one onto Ray's AutoscalingConfig, and the two targets it lacks travel as policy_kwargs.
"""
from __future__ import annotations

import math
from typing import Any

from llmfleet.rayserve.config import ReplicaSettings
from llmfleet.rayserve.replica import KV_USAGE, WAITING


def desired_replicas(current: int, ongoing: float, waiting: float, mean_kv_usage: float,
                     settings: ReplicaSettings) -> tuple[float, str]:
    """The replica count the signals ask for (before Ray's delays and bounds) and which signal asked for it."""
    wanted = {"ongoing": ongoing / settings.target_ongoing_requests,
              "waiting": waiting / settings.target_waiting_requests,
              "kv": current * mean_kv_usage / settings.target_kv_usage}
    signal = max(wanted, key=wanted.get)
    return wanted[signal], signal


class EngineAutoscalingPolicy:
    """Ray Serve custom autoscaling policy over desired_replicas (see the module docstring)."""

    def __init__(self, **settings: Any):
        self.settings = ReplicaSettings(**settings)

    def __call__(self, ctx) -> tuple[float, dict]:
        if ctx.current_num_replicas == 0:
            return ctx.target_num_replicas, ctx.policy_state   # scale-from-zero is Ray's cold-start path
        metrics = ctx.aggregated_metrics or {}
        waiting = sum(metrics.get(WAITING, {}).values())
        kv = list(metrics.get(KV_USAGE, {}).values())
        mean_kv = sum(kv) / len(kv) if kv else 0.0
        desired, signal = desired_replicas(ctx.current_num_replicas, ctx.total_num_requests, waiting, mean_kv,
                                           self.settings)
        state = {**ctx.policy_state, "signal": signal, "desired": desired}
        return math.ceil(desired - 1e-9), state


def autoscaling_config(settings: ReplicaSettings) -> dict:
    """Ray Serve's `autoscaling_config` for a version's replicas (a plain dict, as serve.deployment takes it)."""
    return {
        "min_replicas": settings.min,
        "max_replicas": settings.max,
        "initial_replicas": settings.initial,
        "target_ongoing_requests": settings.target_ongoing_requests,
        "upscale_delay_s": settings.upscale_delay_s,
        "downscale_delay_s": settings.downscale_delay_s,
        "look_back_period_s": settings.look_back_period_s,
        "policy": {"policy_function": f"{__name__}:EngineAutoscalingPolicy",
                   "policy_kwargs": _policy_kwargs(settings)},
    }


def _policy_kwargs(settings: ReplicaSettings) -> dict:
    return {name: getattr(settings, name) for name in ReplicaSettings.__dataclass_fields__}
