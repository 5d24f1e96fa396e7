"""ServiceMonitors (prometheus-operator): every engine port's /metrics and the gateways' /metrics, every 15 s.

Prometheus then labels each series with the Service's name (`service`), the namespace and the pod: the
autoscalers' queries and the Grafana dashboard (deploy/grafana/llmfleet.json) select engine groups by `service`.
"""
from __future__ import annotations

from llmfleet.deploy.objects import labels, metadata
from llmfleet.deploy.spec import DeploymentSpec


def endpoints(ports: list[str]) -> list[dict]:
    return [{"port": port, "path": "/metrics", "interval": "15s"} for port in ports]


def engine_monitor(spec: DeploymentSpec, ports: list[str] | None = None) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": metadata("llmfleet-engines", spec.namespace, labels("engine")),
            "spec": {"selector": {"matchLabels": labels("engine")},
                     "namespaceSelector": {"matchNames": [spec.namespace]},
                     "endpoints": endpoints(ports or ["http"])}}


def gateway_monitor(spec: DeploymentSpec) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": metadata("llmfleet-gateway", spec.namespace, labels("gateway")),
            "spec": {"selector": {"matchLabels": labels("gateway")},
                     "namespaceSelector": {"matchNames": [spec.namespace]},
                     "endpoints": endpoints(["http"])}}
