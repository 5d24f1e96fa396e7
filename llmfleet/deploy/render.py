"""fleet.yaml to a kustomize tree: `base/` (device-neutral) and `overlays/{cpu,gpu,multi-gpu}/`, or to built
manifests (base and one overlay merged, as `kubectl kustomize` would) for `kubectl apply -f`.

The objects are built in code (engine.py, gateway.py, scaling.py, monitoring.py, overlays.py), so a pip-installed
llmfleet renders without any template files; the repository's deploy/kubernetes/ is this output for
deploy/fleet.yaml (a test keeps them equal).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from llmfleet.deploy.engine import engine_objects
from llmfleet.deploy.gateway import gateway_objects
from llmfleet.deploy.merge import apply_patch, set_images
from llmfleet.deploy.monitoring import engine_monitor, gateway_monitor
from llmfleet.deploy.objects import labels
from llmfleet.deploy.overlays import OVERLAYS, images, patches
from llmfleet.deploy.scaling import autoscaler_objects
from llmfleet.deploy.spec import DeploymentSpec, deployment_spec
from llmfleet.gateway.config import GatewayConfig, load_yaml

HEADER = "# Rendered by `llmfleet deploy render` from fleet.yaml: change fleet.yaml and render again.\n"
KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the ConfigMap's fleet.yaml stays readable)."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump(objects: list[dict]) -> str:
    return HEADER + "---\n".join(yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120) for obj in objects)


def load(config_path: str) -> tuple[DeploymentSpec, str]:
    """(the deployment spec, fleet.yaml's text) from the file; ValueError names a bad field."""
    text = Path(config_path).read_text(encoding="utf-8")
    return deployment_spec(GatewayConfig.from_dict(load_yaml(config_path))), text


def base_files(spec: DeploymentSpec, fleet_yaml: str) -> dict[str, list[dict]]:
    """base/ file name -> its objects."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace,
                                                                       "labels": labels("fleet")}}
    files = {"namespace.yaml": [namespace], "gateway.yaml": gateway_objects(spec, fleet_yaml)}
    for engine in spec.engines:
        files[f"engine-{engine.service}.yaml"] = engine_objects(spec, engine) + autoscaler_objects(spec, engine)
    files["monitoring.yaml"] = [engine_monitor(spec), gateway_monitor(spec)]
    return files


def patch_file(patch: dict) -> str:
    return f"patches/{patch['kind'].lower()}-{patch['metadata']['name']}.yaml"


def tree(spec: DeploymentSpec, fleet_yaml: str, overlays: tuple[str, ...] = OVERLAYS) -> dict[str, str]:
    """Relative path -> text of every file of the kustomize tree."""
    base = base_files(spec, fleet_yaml)
    files = {f"base/{name}": dump(objects) for name, objects in base.items()}
    files["base/kustomization.yaml"] = dump([{**KUSTOMIZATION, "resources": list(base)}])
    for overlay in overlays:
        found = patches(spec, overlay)
        files.update({f"overlays/{overlay}/{patch_file(p)}": dump([p]) for p in found})
        kustomization = {**KUSTOMIZATION, "resources": ["../../base"],
                         "patches": [{"path": patch_file(p)} for p in found],
                         "images": [{"name": name, "newName": ref.rsplit(":", 1)[0], "newTag": ref.rsplit(":", 1)[1]}
                                    for name, ref in images(spec, overlay).items()]}
        files[f"overlays/{overlay}/kustomization.yaml"] = dump([kustomization])
    return files


def built(spec: DeploymentSpec, fleet_yaml: str, overlay: str) -> list[dict]:
    """The objects `kubectl kustomize overlays/OVERLAY` yields: base, patched, images set."""
    by_key = {(p["kind"], p["metadata"]["name"]): p for p in patches(spec, overlay)}
    refs = images(spec, overlay)
    return [set_images(apply_patch(obj, by_key[key]) if (key := (obj["kind"], obj["metadata"]["name"])) in by_key
                       else obj, refs)
            for objects in base_files(spec, fleet_yaml).values() for obj in objects]


def write(out: str, files: dict[str, str], overlays: tuple[str, ...]) -> list[Path]:
    """Write `files` under `out`, replacing the base and those overlays' folders (stale patches go too)."""
    root = Path(out)
    for owned in ["base", *(f"overlays/{o}" for o in overlays)]:
        shutil.rmtree(root / owned, ignore_errors=True)
    written = []
    for relative, text in sorted(files.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
