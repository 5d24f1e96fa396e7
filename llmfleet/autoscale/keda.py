"""The policy as a KEDA ScaledObject: Prometheus triggers on the replicas' vLLM-named metrics, HPA behaviour.

Mapping (the Kubernetes manifests render this object; `llmfleet autoscale` stays their single source):
- `ongoing` / `kv`: a trigger of metricType AverageValue on the fleet's sum, so HPA asks for ceil(sum / target)
  replicas, as the Autoscaler does; `waiting` likewise on replicas x target + waiting while anything waits
  (nothing otherwise): the ready replicas plus one per `target` waiting requests;
- `ttft_p90`: metricType Value on the fleet's histogram quantile: ceil(replicas x p90 / target);
- upscale / downscale delays: the HPA behaviour's stabilization windows (HPA applies the least scale-up and the
  least scale-down recommended over its window: a change must have been wanted for the whole window, the same
  rule as the Autoscaler's); scale to zero: minReplicaCount 0 and cooldownPeriod = the to-zero delay;
- spot above an on-demand floor: the floor is a separate Deployment of `on_demand_floor` replicas on on-demand
  nodes; this object scales the spot Deployment between min - floor and max - floor, and its sums leave out what
  the floor carries (floor x target), so the two together follow the same count as the Autoscaler's.
The predictive mode has no KEDA counterpart here; it needs a controller running the Autoscaler itself.
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


def keda_scaled_object(policy: AutoscalePolicy, *, name: str, deployment: str, server_address: str,
                       namespace: str = "default", selector: str = "") -> dict:
    """A `keda.sh/v1alpha1` ScaledObject for `deployment` (the spot one when the policy has a floor under spot).

    `selector`: PromQL label matchers naming the fleet's pods, e.g. 'namespace="llm",app="llmfleet"'.
    """
    if not name or not deployment or not server_address:
        raise ValueError("name, deployment, server_address: all must be non-empty")
    floor = policy.on_demand_floor if policy.spot else 0
    spec = {
        "scaleTargetRef": {"name": deployment},
        "pollingInterval": int(policy.metrics_interval_s),
        "minReplicaCount": max(policy.min_replicas - floor, 0),
        "maxReplicaCount": policy.max_replicas - floor,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleUp": {"stabilizationWindowSeconds": int(policy.upscale_delay_s)},
            "scaleDown": {"stabilizationWindowSeconds": int(policy.downscale_delay_s)}}}},
        "triggers": [_trigger(t.metric, t.value, server_address, selector, floor) for t in policy.targets],
    }
    if spec["minReplicaCount"] == 0:
        spec["cooldownPeriod"] = int(policy.to_zero_delay_s)
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _trigger(metric: str, target: float, server_address: str, selector: str, floor: int) -> dict:
    sel = "{" + selector + "}" if selector else ""
    if metric == "ttft_p90":
        query, metric_type = _TTFT_P90.format(sel=sel), "Value"
    else:
        query, metric_type = _SUMS[metric].format(sel=sel, target=f"{target:g}"), "AverageValue"
        if floor:
            query = f"clamp_min(({query}) - {floor * target:g}, 0)"
    return {"type": "prometheus", "metricType": metric_type, "name": metric.replace("_", "-"),
            "metadata": {"serverAddress": server_address, "query": query, "threshold": f"{target:g}"}}
