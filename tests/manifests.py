"""Checking rendered manifests the way a cluster would: built-in kinds against the Kubernetes JSON schemas of each
version (kubernetes-validate, bundled and offline), custom resources against their CRD's openAPIV3Schema (vendored
under tests/data/crds/), and kustomize trees built by the real `kubectl kustomize`."""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

CRDS = Path(__file__).parent / "data" / "crds"
KUBE_VERSIONS = tuple(f"1.{minor}.0" for minor in range(27, 38))   # every minor release from 1.27 on


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every vendored CRD."""
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


@cache
def _builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator:
    """kubernetes-validate's strict schema for one kind and version, built once (its own validate() reads the
    large shared definitions file again for every object)."""
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)     # rbac.authorization.k8s.io/v1 -> rbac-v1
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        raise AssertionError(f"no schema for {api_version} {kind} in Kubernetes {version}") from None
    definitions = schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields the API server would prune silently (structural schemas drop what they do not declare)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None:   # a schema without properties (metadata, free maps) takes anything
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def validate(obj: dict, version: str) -> None:
    """AssertionError naming the object and the field when `obj` would not be accepted (or would be pruned)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    schema = crd_schemas().get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        errors = sorted(_builtin_validator(version, obj["apiVersion"], obj["kind"]).iter_errors(obj),
                        key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"{name} invalid for Kubernetes {version}: {errors[0].message} at "
                                 f"{'.'.join(map(str, errors[0].path))}")
        return
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(f"{name}: {errors[0].message} at {'.'.join(map(str, errors[0].path))}")
    pruned = unknown_fields(obj, schema)
    if pruned:
        raise AssertionError(f"{name}: fields its CRD does not declare: {', '.join(pruned)}")


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is needed (scripts/install.sh --test installs Debian's kubernetes-client)"
    return path


def kustomize_build(overlay_dir: Path) -> list[dict]:
    """`kubectl kustomize DIR`'s objects. A kubectl whose kustomize predates v4 (Debian's 1.20) reads the older
    spelling of the same kustomization: directories under `bases`, patch files under `patchesStrategicMerge`."""
    version = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True).stdout
    modern = re.search(r"Kustomize Version: v(\d+)", version)
    if not modern or int(modern.group(1)) < 4:
        _to_old_spelling(overlay_dir)
    done = subprocess.run([kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _to_old_spelling(overlay_dir: Path) -> None:
    path = overlay_dir / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    data["bases"] = data.pop("resources")
    data["patchesStrategicMerge"] = [p["path"] for p in data.pop("patches", [])]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
