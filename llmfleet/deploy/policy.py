"""An engine group's AutoscalePolicy, built from its `deployment:` fields: the one object the group's ScaledObject
or HPA is rendered from (llmfleet.autoscale.keda / .hpa), the same the fleet simulator runs.

The group's fields own the bounds and the floor: min_replicas, max_replicas, and spot above the on-demand floor
that spot_fraction leaves. `autoscale:` (per engine, or a default for all) gives the rest: a preset's name
(`queue`, ...) or policy fields, with `preset: NAME` to start from one. Without it the policy tracks waiting
requests (`target_waiting`, 4 by default) with no upscale delay, a 5-minute downscale delay and a 15 s interval
(the ServiceMonitors scrape every 15 s). `target_waiting`, where set, is the policy's waiting target.
"""
from __future__ import annotations

from typing import Any

from llmfleet.autoscale.keda import check_kubernetes
from llmfleet.autoscale.policy import PRESETS, AutoscalePolicy, policy_from_dict

DEFAULT_WAITING = 4.0
KUBERNETES_DEFAULTS = {"name": "waiting", "upscale_delay_s": 0.0, "downscale_delay_s": 300.0,
                       "metrics_interval_s": 15.0}
OWNED = {"min_replicas": "min_replicas", "max_replicas": "max_replicas", "on_demand_floor": "spot_fraction",
         "spot": "spot_fraction"}


def engine_policy(service: str, autoscale: Any, bounds: tuple[int, int], on_demand_floor: int, spot: bool,
                  target_waiting: float | None) -> AutoscalePolicy:
    """The group's policy; a ValueError names the field, e.g. deployment.engines.S.autoscale.upscale_delay_s."""
    where = f"deployment.engines.{service}"
    fields = _fields(autoscale, f"{where}.autoscale")
    targets = dict(fields.get("targets") or {})
    if target_waiting is not None:
        if isinstance(autoscale, dict) and "waiting" in (autoscale.get("targets") or {}):
            raise ValueError(f"{where}.autoscale.targets.waiting: also given as target_waiting; give one")
        targets["waiting"] = target_waiting
    fields["targets"] = targets or {"waiting": DEFAULT_WAITING}
    fields |= {"min_replicas": bounds[0], "max_replicas": bounds[1], "on_demand_floor": on_demand_floor if spot else 0,
               "spot": spot}
    try:
        policy = policy_from_dict(fields)
        check_kubernetes(policy)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}.autoscale.{error}") from None
    return policy


def _fields(autoscale: Any, where: str) -> dict:
    """Policy fields from the `autoscale:` entry: a preset's, then those given (targets replace the preset's)."""
    if autoscale is None:
        return dict(KUBERNETES_DEFAULTS)
    if isinstance(autoscale, str):
        autoscale = {"preset": autoscale}
    if not isinstance(autoscale, dict):
        raise ValueError(f"{where}: a preset's name ({', '.join(PRESETS)}) or a mapping of policy fields")
    given = dict(autoscale)
    name = given.pop("preset", None)
    for field, owner in OWNED.items():
        if field in given:
            raise ValueError(f"{where}.{field}: set by the engine's {owner}, not here")
    if name is None:
        return {**KUBERNETES_DEFAULTS, **given}
    if name not in PRESETS:
        raise ValueError(f"{where}: unknown preset {name!r}; one of {', '.join(PRESETS)}, or policy fields")
    if not isinstance(given.get("targets", {}), dict):
        raise ValueError(f"{where}.targets: must be a mapping of metric to value, e.g. {{ongoing: 48}}")
    return {"name": name, **PRESETS[name].fields, **given}
