"""An engine group's autoscaler object, rendered from the group's AutoscalePolicy (EngineSpec.policy) by
llmfleet.autoscale: a KEDA ScaledObject (default) whose Prometheus triggers select the group's pods by namespace
and Service label, or an HPA on prometheus-adapter's External metrics (rules in docs/kubernetes.md). Either drives
the group's spot Deployment where it has spot capacity (the on-demand floor stays fixed), else its on-demand one.
"""
from __future__ import annotations

from llmfleet.autoscale.hpa import horizontal_pod_autoscaler
from llmfleet.autoscale.keda import keda_scaled_object
from llmfleet.deploy.engine import engine_labels
from llmfleet.deploy.objects import engine_name
from llmfleet.deploy.spec import DeploymentSpec, EngineSpec


def autoscaler_objects(spec: DeploymentSpec, engine: EngineSpec) -> list[dict]:
    if spec.autoscaler == "keda":
        return [scaled_object(spec, engine)]
    if spec.autoscaler == "hpa":
        return [hpa(spec, engine)]
    return []


def scaled_object(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    return keda_scaled_object(engine.policy, name=engine.service, namespace=spec.namespace,
                              deployment=engine_name(engine.service, engine.autoscaled),
                              server_address=spec.prometheus_url, labels=engine_labels(engine),
                              selector=f'namespace="{spec.namespace}",service="{engine.service}"')


def hpa(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    return horizontal_pod_autoscaler(engine.policy, name=engine.service, namespace=spec.namespace,
                                     deployment=engine_name(engine.service, engine.autoscaled),
                                     match_labels={"service": engine.service}, labels=engine_labels(engine))
