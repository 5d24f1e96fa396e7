"""The policy as Kubernetes autoscaling objects: a KEDA ScaledObject (Prometheus triggers on the replicas'
vLLM-named metrics), and the HPA's bounds and behaviour, which the HPA alternative (llmfleet.autoscale.hpa) shares.

Mapping (`llmfleet deploy render` builds every engine group's ScaledObject here, from the group's policy):
- `ongoing` / `kv`: a trigger of metricType AverageValue on the fleet's sum, so HPA asks for ceil(sum / target)
  replicas, as the Autoscaler does; `waiting` likewise on replicas x target + waiting while anything waits
  (nothing otherwise): the ready replicas plus one per `target` waiting requests;
- `ttft_p90`: metricType Value on the fleet's histogram quantile: ceil(replicas x p90 / target);
- upscale / downscale delays: the HPA behaviour's stabilization windows (HPA applies the least scale-up and the
  least scale-down recommended over its window: a change must have been wanted for the whole window, the same
  rule as the Autoscaler's); scale to zero: minReplicaCount 0 and cooldownPeriod = the to-zero delay;
- spot above an on-demand floor: the floor is a separate Deployment of `on_demand_floor` replicas on on-demand
  nodes; this object scales the spot Deployment between min - floor and max - floor, and its sums leave out what
  the floor carries (floor x target), so floor + spot pods follow the same count as the Autoscaler's.
Besides the windows, HPA's rate limits apply (RATE_LIMITS: at most doubling every 30 s, one pod less a minute),
since a pod that goes takes minutes to come back. The predictive mode and the smoothing factors have no
counterpart here (they need a controller running the Autoscaler itself): a policy that sets them is refused.
"""
from __future__ import annotations

from llmfleet.autoscale.policy import AutoscalePolicy

_SUMS = {
    "ongoing": "sum(vllm:num_requests_running{sel}) + sum(vllm:num_requests_waiting{sel})",
    "waiting": ("(count(vllm:num_requests_waiting{sel}) * {target} + sum(vllm:num_requests_waiting{sel})) "
                "and on() (sum(vllm:num_requests_waiting{sel}) > 0)"),
    "kv": "sum(vllm:kv_cache_usage_perc{sel})",
}
_TTFT_P90 = "histogram_quantile(0.9, sum(rate(vllm:time_to_first_token_seconds_bucket{sel}[1m])) by (le))"
RATE_LIMITS = {"scaleUp": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
               "scaleDown": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}
MAX_WINDOW_S = 3600          # the API server refuses a longer stabilization window


def check_kubernetes(policy: AutoscalePolicy) -> None:
    """ValueError naming the first field Kubernetes cannot carry out as the Autoscaler would."""
    if policy.predictive is not None:
        raise ValueError("predictive: KEDA and the HPA have no forecast; run the Autoscaler as a controller")
    for name in ("upscale_smoothing_factor", "downscale_smoothing_factor"):
        if getattr(policy, name) != 1:
            raise ValueError(f"{name}: the HPA moves all the way to its recommendation; only 1 applies")
    if policy.initial_replicas is not None:
        raise ValueError("initial_replicas: the autoscaler owns the Deployment's replicas from the start")
    for name, value, most in (("upscale_delay_s", policy.upscale_delay_s, MAX_WINDOW_S),
                              ("downscale_delay_s", policy.downscale_delay_s, MAX_WINDOW_S),
                              ("downscale_to_zero_delay_s", policy.to_zero_delay_s, None),
                              ("metrics_interval_s", policy.metrics_interval_s, None)):
        if value != int(value) or (most is not None and value > most):
            raise ValueError(f"{name}: Kubernetes takes whole seconds{f' up to {most}' if most else ''}, "
                             f"got {value!r}")


def floor(policy: AutoscalePolicy) -> int:
    """Replicas of the fixed on-demand Deployment beside the autoscaled one (0 without spot)."""
    return policy.on_demand_floor if policy.spot else 0


def bounds(policy: AutoscalePolicy) -> tuple[int, int]:
    """(min, max) pods of the autoscaled Deployment: the policy's bounds less the fixed on-demand floor."""
    return max(policy.min_replicas - floor(policy), 0), policy.max_replicas - floor(policy)


def behavior(policy: AutoscalePolicy) -> dict:
    """HPA behaviour: the delays as stabilization windows, with the rate limits."""
    windows = {"scaleUp": policy.upscale_delay_s, "scaleDown": policy.downscale_delay_s}
    return {way: {"stabilizationWindowSeconds": int(seconds), "policies": [dict(p) for p in RATE_LIMITS[way]]}
            for way, seconds in windows.items()}   # copies: a patched object must not change the next one


def target_ref(deployment: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}


def keda_scaled_object(policy: AutoscalePolicy, *, name: str, deployment: str, server_address: str,
                       namespace: str = "default", selector: str = "", labels: dict | None = None) -> dict:
    """A `keda.sh/v1alpha1` ScaledObject for `deployment` (the spot one when the policy has a floor under spot).

    `selector`: PromQL label matchers naming the fleet's pods (floor and spot alike), e.g.
    'namespace="llm",service="chat"'.
    """
    if not name or not deployment or not server_address:
        raise ValueError("name, deployment, server_address: all must be non-empty")
    check_kubernetes(policy)
    low, high = bounds(policy)
    spec = {
        "scaleTargetRef": target_ref(deployment),
        "pollingInterval": int(policy.metrics_interval_s),
        "minReplicaCount": low,
        "maxReplicaCount": high,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(policy)}},
        "triggers": [_trigger(t.metric, t.value, server_address, selector, floor(policy)) for t in policy.targets],
    }
    if low == 0:
        spec["cooldownPeriod"] = int(policy.to_zero_delay_s)
    metadata = {"name": name, "namespace": namespace} | ({"labels": labels} if labels else {})
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata, "spec": spec}


def _trigger(metric: str, target: float, server_address: str, selector: str, floor_: int) -> dict:
    sel = "{" + selector + "}" if selector else ""
    if metric == "ttft_p90":
        query, metric_type = _TTFT_P90.format(sel=sel), "Value"
    else:
        query, metric_type = _SUMS[metric].format(sel=sel, target=f"{target:g}"), "AverageValue"
        if floor_:
            query = f"clamp_min(({query}) - {floor_ * target:g}, 0)"
    return {"type": "prometheus", "metricType": metric_type, "name": metric.replace("_", "-"),
            "metadata": {"serverAddress": server_address, "query": query, "threshold": f"{target:g}",
                         "activationThreshold": "0"}}
