"""Autoscaling an engine group on its queue: `vllm:num_requests_waiting` summed over the group's pods, against
`target_waiting` per pod, as vLLM's production stack and KServe do.

KEDA (default): a ScaledObject whose Prometheus trigger runs the query itself. HPA: the same target as an External
metric, which needs prometheus-adapter to serve `llmfleet_num_requests_waiting` (rule in docs/kubernetes.md).
Either drives the group's spot Deployment where it has spot capacity (the on-demand floor stays fixed), else its
on-demand one; KEDA's query takes the floor's share out of the queue first (the HPA's adapter metric cannot, so
under it the floor comes on top). Scale-up acts at once; scale-down waits out a 5-minute window so that a lull
does not drop replicas that take minutes to come back.
"""
from __future__ import annotations

from llmfleet.deploy.engine import engine_labels
from llmfleet.deploy.objects import engine_name, metadata
from llmfleet.deploy.spec import DeploymentSpec, EngineSpec

EXTERNAL_METRIC = "llmfleet_num_requests_waiting"     # the name prometheus-adapter serves (docs/kubernetes.md)
SCALE_DOWN_WINDOW_S = 300


def autoscaler_objects(spec: DeploymentSpec, engine: EngineSpec) -> list[dict]:
    if spec.autoscaler == "keda":
        return [scaled_object(spec, engine)]
    if spec.autoscaler == "hpa":
        return [hpa(spec, engine)]
    return []


def bounds(engine: EngineSpec) -> tuple[int, int]:
    """(min, max) pods of the autoscaled Deployment: the group's bounds less the fixed on-demand floor."""
    floor = engine.on_demand_floor if engine.autoscaled == "spot" else 0
    return engine.min_replicas - floor, engine.max_replicas - floor


def waiting_query(spec: DeploymentSpec, engine: EngineSpec) -> str:
    """Requests waiting over the whole group (floor and spot pods alike: the Service label is the group's), less
    what the fixed floor is meant to hold, so that floor + spot pods = ceil(waiting / target_waiting)."""
    total = f'sum(vllm:num_requests_waiting{{namespace="{spec.namespace}",service="{engine.service}"}})'
    floor = engine.on_demand_floor if engine.autoscaled == "spot" else 0
    return f"clamp_min({total} - {_number(floor * engine.target_waiting)}, 0)" if floor else total


def _behavior() -> dict:
    return {"scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}]},
            "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}


def scaled_object(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    low, high = bounds(engine)
    trigger = {"type": "prometheus", "metricType": "AverageValue",
               "metadata": {"serverAddress": spec.prometheus_url, "query": waiting_query(spec, engine),
                            "threshold": _number(engine.target_waiting), "activationThreshold": "0"}}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": metadata(engine.service, spec.namespace, engine_labels(engine)),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": engine_name(engine.service, engine.autoscaled)},
                     "minReplicaCount": low, "maxReplicaCount": high, "pollingInterval": 15,
                     "cooldownPeriod": SCALE_DOWN_WINDOW_S,
                     "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
                     "triggers": [trigger]}}


def hpa(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    low, high = bounds(engine)
    metric = {"type": "External", "external": {
        "metric": {"name": EXTERNAL_METRIC, "selector": {"matchLabels": {"service": engine.service}}},
        "target": {"type": "AverageValue", "averageValue": _number(engine.target_waiting)}}}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(engine.service, spec.namespace, engine_labels(engine)),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": engine_name(engine.service, engine.autoscaled)},
                     "minReplicas": max(1, low), "maxReplicas": high, "metrics": [metric],
                     "behavior": _behavior()}}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
