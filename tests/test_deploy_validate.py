"""Every rendered manifest, for every overlay and autoscaler, is valid for each Kubernetes version we support
(the JSON schemas kubernetes-validate bundles, strict: unknown fields fail), and the KEDA ScaledObjects and
ServiceMonitors are valid against their own CRDs; a broken manifest is caught."""
from __future__ import annotations

import copy
import socket

import pytest
import yaml

from llmfleet.deploy.render import built
from llmfleet.deploy.spec import deployment_spec
from llmfleet.gateway.config import GatewayConfig
from tests.fleet_procs import ROOT
from tests.manifests import KUBE_VERSIONS, crd_schemas, validate

EXAMPLE = ROOT / "deploy" / "fleet.yaml"


def _offline(*args):
    raise OSError("validation must not touch the network")


def _spec(autoscaler: str):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["deployment"]["autoscaler"] = autoscaler
    return deployment_spec(GatewayConfig.from_dict(data))


@pytest.mark.parametrize("autoscaler", ["keda", "hpa", "none"])
@pytest.mark.parametrize("overlay", ["cpu", "gpu", "multi-gpu"])
def test_every_rendered_manifest_is_valid_for_each_kubernetes_version(overlay, autoscaler, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _offline)   # the schemas are bundled: nothing is fetched
    objects = built(_spec(autoscaler), EXAMPLE.read_text(), overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Role", "RoleBinding", "ServiceAccount",
            "ServiceMonitor", "Namespace"} <= kinds
    assert ({"ScaledObject"} if autoscaler == "keda" else {"HorizontalPodAutoscaler"} if autoscaler == "hpa"
            else set()) == kinds & {"ScaledObject", "HorizontalPodAutoscaler"}
    for version in KUBE_VERSIONS:
        for obj in objects:
            validate(obj, version)


def test_the_vendored_crds_are_those_rendered():
    assert set(crd_schemas()) == {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


def _one(kind: str, autoscaler: str = "keda") -> dict:
    return next(o for o in built(_spec(autoscaler), "x", "gpu") if o["kind"] == kind)


def test_a_broken_manifest_fails_validation():
    deployment = _one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}        # misspelled
    with pytest.raises(AssertionError, match="Deployment/.* invalid for Kubernetes 1.37.0"):
        validate(deployment, "1.37.0")
    hpa = _one("HorizontalPodAutoscaler", "hpa")
    hpa["spec"]["minReplicas"] = "one"
    with pytest.raises(AssertionError, match="HorizontalPodAutoscaler/chat-v1 invalid"):
        validate(hpa, "1.30.0")
    scaled = _one("ScaledObject")
    typo = copy.deepcopy(scaled)
    typo["spec"]["minReplicas"] = 1                                                      # KEDA says minReplicaCount
    with pytest.raises(AssertionError, match=r"ScaledObject/chat-v1: fields its CRD does not declare: .spec.minRep"):
        validate(typo, "1.37.0")
    untyped = copy.deepcopy(scaled)
    untyped["spec"]["triggers"][0]["metadata"]["threshold"] = 4                           # must be a string
    with pytest.raises(AssertionError, match="ScaledObject/chat-v1: 4 is not of type 'string'"):
        validate(untyped, "1.37.0")
    monitor = _one("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(AssertionError, match="ServiceMonitor/llmfleet-engines: '15 seconds' does not match"):
        validate(monitor, "1.37.0")
