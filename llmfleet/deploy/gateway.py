"""The gateway's objects: its ConfigMap (fleet.yaml as written), ServiceAccount and the Role that lets it list and
watch EndpointSlices, its Deployment, Service and PodDisruptionBudget.

The gateway's readiness is /health, not /ready: with every engine down its /ready fails, and a gateway taken out of
its Service would leave clients with refused connections instead of its own 503 and Retry-After.
"""
from __future__ import annotations

import hashlib

from llmfleet.deploy.objects import GATEWAY_IMAGE, GATEWAY_PORT, http_probe, labels, metadata, prestop_sleep
from llmfleet.deploy.spec import DeploymentSpec

NAME = "llmfleet-gateway"
CONFIG_PATH = "/etc/llmfleet"


def gateway_objects(spec: DeploymentSpec, fleet_yaml: str) -> list[dict]:
    return [config_map(spec, fleet_yaml), *rbac(spec), deployment(spec, fleet_yaml), service(spec), pdb(spec)]


def config_map(spec: DeploymentSpec, fleet_yaml: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(f"{NAME}-config", spec.namespace, labels("gateway")),
            "data": {"fleet.yaml": fleet_yaml}}


def rbac(spec: DeploymentSpec) -> list[dict]:
    """Read-only access to EndpointSlices in the fleet's namespace: what replica discovery needs, nothing more."""
    meta = metadata(NAME, spec.namespace, labels("gateway"))
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
             "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
             "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": spec.namespace}]}]


def deployment(spec: DeploymentSpec, fleet_yaml: str) -> dict:
    # a changed fleet.yaml changes the pod template, so `kubectl apply` rolls the gateways onto it
    digest = hashlib.sha256(fleet_yaml.encode()).hexdigest()[:16]
    container = {
        "name": "gateway", "image": GATEWAY_IMAGE,
        "args": ["gateway", "--config", f"{CONFIG_PATH}/fleet.yaml", "--host", "0.0.0.0", "--port",
                 str(GATEWAY_PORT)],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": http_probe("/health", "http", 5, 2),
        "livenessProbe": http_probe("/health", "http", 10, 3, timeout_s=5),
        "lifecycle": prestop_sleep(spec.prestop_sleep_s),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_PATH, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}]}
    if spec.gateway_secret is not None:   # keys and database URLs stay out of the ConfigMap
        container["envFrom"] = [{"secretRef": {"name": spec.gateway_secret, "optional": True}}]
    volumes = [{"name": "config", "configMap": {"name": f"{NAME}-config"}}, {"name": "tmp", "emptyDir": {}}]
    if spec.model_pvc is not None:   # the tokenizers prefix-aware routing hashes prompts with (`tokenizer:`)
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": spec.model_pvc, "readOnly": True}})
        container["volumeMounts"].append({"name": "models", "mountPath": "/models", "readOnly": True})
    pod = {"serviceAccountName": NAME, "terminationGracePeriodSeconds": spec.termination_grace_s,
           "enableServiceLinks": False,
           "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
               {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": labels("gateway")}}}]}},
           "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
           "containers": [container], "volumes": volumes}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(NAME, spec.namespace,
                                                                                 labels("gateway")),
            "spec": {"replicas": spec.gateway_replicas, "selector": {"matchLabels": labels("gateway")},
                     "template": {"metadata": {"labels": labels("gateway"),
                                               "annotations": {"llmfleet.dev/config-sha256": digest}},
                                  "spec": pod}}}


def service(spec: DeploymentSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(NAME, spec.namespace, labels("gateway")),
            "spec": {"type": "ClusterIP", "selector": labels("gateway"),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def pdb(spec: DeploymentSpec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(NAME, spec.namespace, labels("gateway")),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels("gateway")}}}
