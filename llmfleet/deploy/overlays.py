"""The three overlays over the device-neutral base: what each patches, and which images it uses.

cpu         engines on `--device cpu` with CPU and memory requests; image TAG-cpu
gpu         one engine per pod on one GPU (`nvidia.com/gpu: 1`, the GPU taint tolerated, /dev/shm in memory)
multi-gpu   `gpus_per_replica` engines per pod, one GPU each (engine i on port 8000 + i): `llmfleet serve` runs one
            device, so a pod of G GPUs is G replicas to the gateway, which finds every `http-N` port of the Service

The gateway runs the CPU image everywhere: it needs no GPU.
"""
from __future__ import annotations

from llmfleet.deploy.engine import capacities, container, tolerations, volumes
from llmfleet.deploy.monitoring import engine_monitor
from llmfleet.deploy.objects import ENGINE_IMAGE, GATEWAY_IMAGE, engine_name
from llmfleet.deploy.engine import service as engine_service
from llmfleet.deploy.spec import DeploymentSpec, EngineSpec

OVERLAYS = ("cpu", "gpu", "multi-gpu")


def images(spec: DeploymentSpec, overlay: str) -> dict[str, str]:
    """Base image name -> repository:tag for `overlay`."""
    variant = "cpu" if overlay == "cpu" else "cuda"
    return {ENGINE_IMAGE: f"{spec.image}:{spec.tag}-{variant}", GATEWAY_IMAGE: f"{spec.image}:{spec.tag}-cpu"}


def engines_per_pod(engine: EngineSpec, overlay: str) -> int:
    return engine.gpus_per_replica if overlay == "multi-gpu" else 1


def patches(spec: DeploymentSpec, overlay: str) -> list[dict]:
    """Strategic-merge patches of `overlay`, each naming the object it patches."""
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay: unknown value {overlay!r}; use one of {', '.join(OVERLAYS)}")
    found = [_deployment_patch(spec, engine, capacity, overlay)
             for engine in spec.engines for capacity in capacities(engine)]
    if overlay == "multi-gpu":
        found += [_service_patch(spec, engine) for engine in spec.engines if engine.gpus_per_replica > 1]
        widest = max(engine.gpus_per_replica for engine in spec.engines)
        monitor = engine_monitor(spec, ["http"] + [f"http-{i}" for i in range(1, widest)])
        found.append({**_identity(monitor), "spec": {"endpoints": monitor["spec"]["endpoints"]}})
    return found


def _resources(engine: EngineSpec, gpus: int) -> dict:
    limits = {"memory": engine.memory} | ({"nvidia.com/gpu": str(gpus)} if gpus else {})
    return {"requests": {"cpu": engine.cpu, "memory": engine.memory}, "limits": limits}


def _deployment_patch(spec: DeploymentSpec, engine: EngineSpec, capacity: str, overlay: str) -> dict:
    gpu = overlay != "cpu"
    device = "cuda" if gpu else "cpu"
    containers = [container(spec, engine, i, device, _resources(engine, 1 if gpu else 0))
                  for i in range(engines_per_pod(engine, overlay))]
    pod: dict = {"containers": containers}
    if gpu:
        pod["tolerations"] = tolerations(capacity, gpu=True)   # a list without merge key: stated whole
        pod["volumes"] = [v for v in volumes(spec, shm=True) if v["name"] == "dshm"]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": engine_name(engine.service, capacity), "namespace": spec.namespace},
            "spec": {"template": {"spec": pod}}}


def _service_patch(spec: DeploymentSpec, engine: EngineSpec) -> dict:
    svc = engine_service(spec, engine, engine.gpus_per_replica)
    return {**_identity(svc), "spec": {"ports": svc["spec"]["ports"][1:]}}


def _identity(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]}}
