"""What `kustomize build` does with the overlays' patches, for the fields they touch: so `llmfleet deploy render
--built` writes plain manifests without a kustomize binary (tests check both agree with `kubectl kustomize`).

Strategic merge patch for the built-in kinds: maps merge key by key; lists with a patch merge key in the
Kubernetes API (containers and volumes by name, a container's ports by containerPort, a Service's ports by port,
volumeMounts by mountPath, env by name) merge item by item (the patch's items first), any other list is
replaced. Custom resources get a
JSON merge patch (RFC 7386): every list is replaced. `images:` rewrites each container image named in it.
"""
from __future__ import annotations

import copy

_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "volumeMounts": "mountPath",
               "env": "name"}
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1")


def apply_patch(base: dict, patch: dict) -> dict:
    """`base` with `patch` applied as kustomize would (both full objects of one kind and name)."""
    strategic = base.get("apiVersion") in BUILTIN_GROUPS
    return _merge(copy.deepcopy(base), copy.deepcopy(patch), strategic)


def _merge(base: dict, patch: dict, strategic: bool) -> dict:
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value, strategic)
        elif strategic and isinstance(value, list) and isinstance(base.get(key), list) \
                and _merge_key(key, value) is not None:
            base[key] = _merge_list(base[key], value, _merge_key(key, value), strategic)
        else:
            base[key] = value
    return base


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports" and items and isinstance(items[0], dict):
        return "containerPort" if "containerPort" in items[0] else "port"
    return _MERGE_KEYS.get(field)


def _merge_list(base: list, patch: list, key: str, strategic: bool) -> list:
    """Items of the patch first, in its order (each merged into its base item), then the base's other items:
    the order a strategic merge leaves them in."""
    by_key = {item.get(key): item for item in base}
    patched = [_merge(by_key[item.get(key)], item, strategic) if item.get(key) in by_key else item
               for item in patch]
    named = {item.get(key) for item in patch}
    return patched + [item for item in base if item.get(key) not in named]


def set_images(obj: dict, images: dict[str, str]) -> dict:
    """Replace container images named in `images` (name -> repository:tag), in any pod template."""
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*spec.get("containers", ()), *spec.get("initContainers", ())]:
        if container.get("image") in images:
            container["image"] = images[container["image"]]
    return obj
