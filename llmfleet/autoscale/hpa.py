"""The policy as an `autoscaling/v2` HorizontalPodAutoscaler (the alternative to KEDA): bounds, floor and
stabilization windows as in llmfleet.autoscale.keda, one External metric per target.

The External metrics come from prometheus-adapter (its rules in docs/kubernetes.md), which serves plain sums per
engine group: `ongoing` and `kv` (AverageValue) and `ttft_p90` (Value) ask for the Autoscaler's counts, but
`waiting` asks for ceil(waiting / target) instead of replicas + ceil(waiting / target), and the on-demand floor's
share is not taken out of the sums (the floor comes on top). KEDA's triggers have neither difference.
"""
from __future__ import annotations

from llmfleet.autoscale.keda import behavior, bounds, check_kubernetes, target_ref
from llmfleet.autoscale.policy import AutoscalePolicy

EXTERNAL_METRICS = {"ongoing": "llmfleet_num_requests_ongoing", "waiting": "llmfleet_num_requests_waiting",
                    "kv": "llmfleet_kv_cache_usage_perc", "ttft_p90": "llmfleet_time_to_first_token_p90_seconds"}


def horizontal_pod_autoscaler(policy: AutoscalePolicy, *, name: str, deployment: str, namespace: str,
                              match_labels: dict[str, str], labels: dict | None = None) -> dict:
    """An HPA for `deployment`; `match_labels` select the group's series in the adapter (e.g. {service: S})."""
    check_kubernetes(policy)
    low, high = bounds(policy)
    metrics = []
    for target in policy.targets:
        kind = "Value" if target.metric == "ttft_p90" else "AverageValue"
        metrics.append({"type": "External", "external": {
            "metric": {"name": EXTERNAL_METRICS[target.metric], "selector": {"matchLabels": dict(match_labels)}},
            "target": {"type": kind, ("value" if kind == "Value" else "averageValue"): f"{target.value:g}"}}})
    metadata = {"name": name, "namespace": namespace} | ({"labels": labels} if labels else {})
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
            "spec": {"scaleTargetRef": target_ref(deployment), "minReplicas": max(1, low), "maxReplicas": high,
                     "metrics": metrics, "behavior": behavior(policy)}}
