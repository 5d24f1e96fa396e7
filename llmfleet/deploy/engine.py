"""One engine group's objects: a headless Service, the on-demand floor and spot Deployments, a PodDisruptionBudget.

Probes: startup on /health (weights load and CUDA graphs are captured before the server answers: up to 15 min),
readiness on /ready (503 while draining), liveness on /health. Termination: the preStop hook sleeps while the
endpoint's removal reaches the gateways, then SIGTERM starts `llmfleet serve`'s drain (no new requests, the
in-flight ones get --drain-timeout seconds); the grace period covers both. A spot node's preemption notice takes
the same path (the node is drained, the pod gets SIGTERM), within the cloud's notice.

Containers are built per device (None in the base, "cpu" / "cuda" in the overlays) and per engine index: a
multi-GPU pod runs one engine per GPU, engine i on port 8000 + i, since `llmfleet serve` runs one device each.
"""
from __future__ import annotations

from llmfleet.deploy.objects import (ENGINE_IMAGE, ENGINE_PORT, KV_EVENTS_PORT, engine_name, http_probe, labels,
                                     metadata, prestop_sleep)
from llmfleet.deploy.spec import DeploymentSpec, EngineSpec

ENGINE_LABEL, CAPACITY_LABEL = "llmfleet.dev/engine", "llmfleet.dev/capacity"
# How the common node provisioners and clouds label spot capacity (any one of them marks a spot node)
SPOT_NODE_LABELS = (("karpenter.sh/capacity-type", "spot"), ("eks.amazonaws.com/capacityType", "SPOT"),
                    ("cloud.google.com/gke-spot", "true"), ("kubernetes.azure.com/scalesetpriority", "spot"))
SPOT_TOLERATIONS = ({"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                     "effect": "NoSchedule"},
                    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot",
                     "effect": "NoSchedule"})
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def engine_labels(engine: EngineSpec, capacity: str | None = None) -> dict[str, str]:
    extra = {ENGINE_LABEL: engine.service} | ({CAPACITY_LABEL: capacity} if capacity else {})
    return labels("engine", **extra)


def capacities(engine: EngineSpec) -> list[str]:
    """The Deployments of a group: the on-demand floor where there is one, spot where spot_fraction allows."""
    return [c for c, present in (("on-demand", engine.on_demand_floor > 0), ("spot", engine.spot_fraction > 0))
            if present]


def engine_objects(spec: DeploymentSpec, engine: EngineSpec) -> list[dict]:
    return [service(spec, engine), *(deployment(spec, engine, c) for c in capacities(engine)), pdb(spec, engine)]


def service(spec: DeploymentSpec, engine: EngineSpec, engines_per_pod: int = 1) -> dict:
    """Headless: the gateway reads its EndpointSlices and talks to each pod (each engine port) itself."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(engine.service, spec.namespace, engine_labels(engine)),
            "spec": {"clusterIP": "None", "selector": {ENGINE_LABEL: engine.service},
                     "ports": [{"name": _suffixed("http", i), "port": ENGINE_PORT + i,
                                "targetPort": _suffixed("http", i), "protocol": "TCP"}
                               for i in range(engines_per_pod)]}}


def deployment(spec: DeploymentSpec, engine: EngineSpec, capacity: str) -> dict:
    body: dict = {}
    if capacity == "on-demand" and engine.autoscaled == "spot":
        body["replicas"] = engine.on_demand_floor                  # the floor: fixed, never autoscaled
    elif spec.autoscaler == "none":
        body["replicas"] = engine.min_replicas - (engine.on_demand_floor if capacity == "spot" else 0)
    # else: the autoscaler owns spec.replicas (a re-apply must not reset it)
    selector = {ENGINE_LABEL: engine.service, CAPACITY_LABEL: capacity}
    body |= {"selector": {"matchLabels": selector},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
             "template": {"metadata": {"labels": engine_labels(engine, capacity)},
                          "spec": pod_spec(spec, engine, capacity)}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(engine_name(engine.service, capacity), spec.namespace,
                                 engine_labels(engine, capacity)), "spec": body}


def pod_spec(spec: DeploymentSpec, engine: EngineSpec, capacity: str) -> dict:
    pod = {"terminationGracePeriodSeconds": spec.termination_grace_s, "automountServiceAccountToken": False,
           "enableServiceLinks": False, "affinity": {"nodeAffinity": node_affinity(capacity)}}
    if capacity == "spot":
        pod["tolerations"] = tolerations(capacity, gpu=False)
    pod["topologySpreadConstraints"] = [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {ENGINE_LABEL: engine.service}}}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]   # one preemption wave hits fewer
    pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
    pod["containers"] = [container(spec, engine, 0, None)]
    pod["volumes"] = volumes(spec)
    return pod


def node_affinity(capacity: str) -> dict:
    if capacity == "spot":   # terms are ORed: a node carrying any provider's spot label
        terms = [{"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
                 for key, value in SPOT_NODE_LABELS]
    else:                    # expressions are ANDed: no spot label of any provider (absent labels pass NotIn)
        terms = [{"matchExpressions": [{"key": key, "operator": "NotIn", "values": [value]}
                                       for key, value in SPOT_NODE_LABELS]}]
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}


def tolerations(capacity: str, gpu: bool) -> list[dict]:
    return [*(SPOT_TOLERATIONS if capacity == "spot" else ()), *([GPU_TOLERATION] if gpu else [])]


def volumes(spec: DeploymentSpec, shm: bool = False) -> list[dict]:
    found = [{"name": "cache", "emptyDir": {}}]          # ~/.cache: converted weights, Triton's kernels
    if spec.model_pvc is not None:
        found.append({"name": "models", "persistentVolumeClaim": {"claimName": spec.model_pvc, "readOnly": True}})
    if shm:                                              # PyTorch's shared memory; 64 MiB by default in a pod
        found.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    return found


def container(spec: DeploymentSpec, engine: EngineSpec, index: int, device: str | None,
              resources: dict | None = None) -> dict:
    """Engine `index` of a pod; `device` None leaves `--device` to the engine (auto)."""
    port, http = ENGINE_PORT + index, _suffixed("http", index)
    args = ["serve", "--model", engine.model, "--host", "0.0.0.0", "--port", str(port),
            "--drain-timeout", str(spec.drain_timeout_s),
            "--kv-events-endpoint", f"tcp://0.0.0.0:{KV_EVENTS_PORT + 2 * index}"]
    args += ["--served-model-name", engine.served_model_name] if engine.served_model_name else []
    args += ["--device", device] if device else []
    mounts = [{"name": "cache", "mountPath": "/home/llmfleet/.cache"}]
    if spec.model_pvc is not None:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
    if device == "cuda":
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    found = {"name": _suffixed("engine", index), "image": ENGINE_IMAGE, "args": [*args, *engine.args],
             "ports": [{"name": http, "containerPort": port, "protocol": "TCP"},
                       {"name": _suffixed("kv-events", index), "containerPort": KV_EVENTS_PORT + 2 * index,
                        "protocol": "TCP"}],
             "startupProbe": http_probe("/health", http, 10, 90),
             "readinessProbe": http_probe("/ready", http, 5, 2),
             "livenessProbe": http_probe("/health", http, 10, 3, timeout_s=5),
             "lifecycle": prestop_sleep(spec.prestop_sleep_s),
             "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
             "volumeMounts": mounts}
    if resources is not None:
        found["resources"] = resources
    return found


def pdb(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    """Voluntary disruptions (node drains, upgrades) take one pod of the group at a time; spot preemptions are
    not voluntary and ignore it."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(engine.service, spec.namespace, engine_labels(engine)),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {ENGINE_LABEL: engine.service}}}}


def _suffixed(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-{index}"
