"""Small builders the manifest modules share: object metadata, labels, probes."""
from __future__ import annotations

APP = "llmfleet"
ENGINE_PORT = 8000          # engine i of a pod serves on ENGINE_PORT + i
KV_EVENTS_PORT = 5557       # engine i publishes KV events on KV_EVENTS_PORT + 2 i (replay on the next port)
GATEWAY_PORT = 8080
ENGINE_IMAGE, GATEWAY_IMAGE = "llmfleet", "llmfleet-gateway"   # names the overlays' `images:` replace


def labels(component: str, **extra: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": APP, **extra}


def metadata(name: str, namespace: str | None, labels_: dict[str, str], **annotations: str) -> dict:
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels_
    if annotations:
        meta["annotations"] = annotations
    return meta


def http_probe(path: str, port: str, period_s: int, failures: int, timeout_s: int = 3) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s, "timeoutSeconds": timeout_s,
            "failureThreshold": failures}


def prestop_sleep(seconds: int) -> dict:
    """A preStop hook that waits: the endpoint's removal reaches every gateway before SIGTERM starts the drain."""
    return {"preStop": {"exec": {"command": ["sleep", str(seconds)]}}}


def engine_name(service: str, capacity: str) -> str:
    """The Deployment of one engine group on one kind of capacity (on-demand | spot)."""
    return f"{service}-{capacity}"
