"""`llmfleet deploy render`: fleet.yaml's deployment section, the objects rendered from it, the repository's
deploy/kubernetes/ kept equal to the renderer's output, and the overlays built by the real kubectl kustomize."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.deploy.render import built, load, tree
from llmfleet.deploy.spec import deployment_spec
from llmfleet.gateway.config import GatewayConfig
from tests.fleet_procs import ROOT, _env
from tests.manifests import kustomize_build

EXAMPLE = ROOT / "deploy" / "fleet.yaml"


def _fleet(**deployment) -> dict:
    return {"models": {"chat": [{"version": "v1", "weight": 9, "replicas": ["k8s://chat-v1"]},
                                {"version": "v2", "weight": 1, "replicas": ["k8s://chat-v2"]}]},
            "deployment": {"image": "registry.example/llmfleet",
                           "engines": {"chat-v1": {"model": "/models/a"}, "chat-v2": {"model": "/models/b"}},
                           **deployment}}


def _spec(data: dict):
    return deployment_spec(GatewayConfig.from_dict(data))


def _objects(spec, overlay: str) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in built(spec, "fleet", overlay)}


@pytest.mark.parametrize("change, message", [
    ({"image": "registry.example/llmfleet:1.0"}, "deployment.image: a repository without a tag"),
    ({"autoscaler": "vpa"}, "deployment.autoscaler: unknown value 'vpa'"),
    ({"spot_fraction": 1.5}, "deployment.engines.chat-v1.spot_fraction: must be a fraction in"),
    ({"min_replicas": 0}, "deployment.engines.chat-v1.min_replicas: must be an integer >= 1"),
    ({"min_replicas": 3, "max_replicas": 2}, "deployment.engines.chat-v1.max_replicas: 2 is below min_replicas 3"),
    ({"min_replicas": 2, "max_replicas": 2, "spot_fraction": 0.4},   # ceil(2 x 0.6) = 2 on demand
     r"deployment.engines.chat-v1.spot_fraction: the on-demand floor \(2\) takes all of max_replicas \(2\)"),
    ({"gpus_per_replica": "two"}, "deployment.engines.chat-v1.gpus_per_replica: must be an integer"),
    ({"target_waiting": 0}, "deployment.engines.chat-v1.target_waiting: must be a number > 0"),
    ({"replica_count": 3}, "deployment.replica_count: unknown setting"),
    ({"autoscale": {"upscale_delay_s": -1}}, "deployment.engines.chat-v1.autoscale.upscale_delay_s: must be a number"),
    ({"autoscale": {"downscale_delay_s": 4000}},
     "deployment.engines.chat-v1.autoscale.downscale_delay_s: Kubernetes takes whole seconds up to 3600"),
    ({"autoscale": "fastest"}, "deployment.engines.chat-v1.autoscale: unknown preset 'fastest'"),
    ({"autoscale": {"preset": "queue", "max_replicas": 9}},
     "deployment.engines.chat-v1.autoscale.max_replicas: set by the engine's max_replicas"),
    ({"autoscale": {"targets": {"queue_depth": 1}}}, "deployment.engines.chat-v1.autoscale.targets.metric: must be"),
    ({"autoscale": {"predictive": {"requests_per_replica": 9}}},
     "deployment.engines.chat-v1.autoscale.predictive: KEDA and the HPA have no forecast"),
    ({"autoscale": {"colour": "red"}}, "deployment.engines.chat-v1.autoscale.colour: unknown policy field"),
    ({"autoscale": {"targets": {"waiting": 8}}, "target_waiting": 2},
     "deployment.engines.chat-v1.autoscale.targets.waiting: also given as target_waiting"),
    ({"namespace": "Prod"}, "deployment.namespace: 'Prod' is not"),
    ({"prometheus_url": "prometheus:9090"}, "deployment.prometheus_url: must be an http"),
    ({"gateway_secret": "My Secret"}, "deployment.gateway_secret: 'My Secret' is not"),
])
def test_bad_deployment_settings_name_their_field(change, message):
    with pytest.raises(ValueError, match=message):
        _spec(_fleet(**change))


def test_engines_must_match_the_services_the_gateway_routes_to():
    data = _fleet()
    del data["deployment"]["engines"]["chat-v2"]
    with pytest.raises(ValueError, match="deployment.engines.chat-v2: k8s://chat-v2 is routed to"):
        _spec(data)
    data = _fleet()
    data["deployment"]["engines"]["chat-v3"] = {"model": "/m"}
    with pytest.raises(ValueError, match="deployment.engines.chat-v3: no replicas entry or model version"):
        _spec(data)
    data = _fleet()
    data["deployment"]["engines"]["chat-v1"]["gpu"] = 1
    with pytest.raises(ValueError, match="deployment.engines.chat-v1.gpu: unknown engine setting"):
        _spec(data)
    with pytest.raises(ValueError, match="deployment: fleet.yaml has no deployment section"):
        deployment_spec(GatewayConfig.from_dict({"replicas": ["k8s://chat"]}))


@pytest.mark.parametrize("spot, floor, deployments, target, bounds", [
    (0.0, 4, ["chat-v1-on-demand"], "chat-v1-on-demand", (4, 10)),
    (0.5, 2, ["chat-v1-on-demand", "chat-v1-spot"], "chat-v1-spot", (2, 8)),
    (0.6, 2, ["chat-v1-on-demand", "chat-v1-spot"], "chat-v1-spot", (2, 8)),   # ceil(4 x 0.4) = 2 on demand
    (1.0, 0, ["chat-v1-spot"], "chat-v1-spot", (4, 10)),
])
def test_spot_fraction_splits_a_floor_from_autoscaled_spot(spot, floor, deployments, target, bounds):
    spec = _spec(_fleet(min_replicas=4, max_replicas=10, spot_fraction=spot))
    objects = _objects(spec, "gpu")
    assert sorted(n for k, n in objects if k == "Deployment" and n.startswith("chat-v1")) == deployments
    if floor and spot:
        assert objects["Deployment", "chat-v1-on-demand"]["spec"]["replicas"] == floor
    scaled = objects["ScaledObject", "chat-v1"]["spec"]
    assert (scaled["scaleTargetRef"]["name"], scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (target,
                                                                                                         *bounds)
    assert "replicas" not in objects["Deployment", target]["spec"]   # the autoscaler owns it
    # the policy's waiting rule (ready pods + one per 4 waiting), less the floor's share: floor + spot pods follow it
    sel = '{namespace="llmfleet",service="chat-v1"}'
    waiting = (f"(count(vllm:num_requests_waiting{sel}) * 4 + sum(vllm:num_requests_waiting{sel})) "
               f"and on() (sum(vllm:num_requests_waiting{sel}) > 0)")
    query = scaled["triggers"][0]["metadata"]["query"]
    assert query == (f"clamp_min(({waiting}) - {floor * 4}, 0)" if floor and spot else waiting)
    pod = objects["Deployment", deployments[-1]]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    if deployments[-1].endswith("spot"):
        assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]} in [
            t["matchExpressions"][0] for t in terms]
        assert {t["key"] for t in pod["tolerations"]} == {"cloud.google.com/gke-spot",
                                                          "kubernetes.azure.com/scalesetpriority", "nvidia.com/gpu"}
    else:
        assert all(e["operator"] == "NotIn" for e in terms[0]["matchExpressions"])


def test_the_engine_policy_drives_the_scaled_object_and_the_hpa():
    data = _fleet(min_replicas=4, max_replicas=10, spot_fraction=0.5, autoscaler="hpa")
    data["deployment"]["engines"]["chat-v1"]["autoscale"] = {"preset": "queue", "downscale_delay_s": 900}
    spec = _spec(data)
    policy = spec.engines[0].policy
    assert (policy.name, policy.min_replicas, policy.max_replicas, policy.spot, policy.on_demand_floor) == (
        "queue", 4, 10, True, 2)
    assert [(t.metric, t.value) for t in policy.targets] == [("ongoing", 48.0), ("waiting", 16.0)]
    assert (policy.upscale_delay_s, policy.downscale_delay_s, policy.metrics_interval_s) == (10.0, 900.0, 10.0)
    default = spec.engines[1].policy                       # no autoscale entry: waiting 4, at once up, 300 s down
    assert ([(t.metric, t.value) for t in default.targets], default.upscale_delay_s, default.downscale_delay_s) == (
        [("waiting", 4.0)], 0.0, 300.0)
    hpa = _objects(spec, "gpu")["HorizontalPodAutoscaler", "chat-v1"]["spec"]
    assert (hpa["scaleTargetRef"]["name"], hpa["minReplicas"], hpa["maxReplicas"]) == ("chat-v1-spot", 2, 8)
    assert [(m["external"]["metric"]["name"], m["external"]["target"]) for m in hpa["metrics"]] == [
        ("llmfleet_num_requests_ongoing", {"type": "AverageValue", "averageValue": "48"}),
        ("llmfleet_num_requests_waiting", {"type": "AverageValue", "averageValue": "16"})]
    assert (hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"],
            hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"]) == (10, 900)
    data["deployment"]["autoscaler"] = "keda"
    data["deployment"]["target_waiting"] = 2                # target_waiting is the policy's waiting target
    scaled = _objects(_spec(data), "gpu")["ScaledObject", "chat-v1"]["spec"]
    assert [(t["name"], t["metadata"]["threshold"]) for t in scaled["triggers"]] == [("ongoing", "48"),
                                                                                      ("waiting", "2")]
    assert (scaled["pollingInterval"], scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (10, 2, 8)
    assert scaled["triggers"][0]["metadata"]["query"].endswith(" - 96, 0)")     # floor 2 x 48 left out
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 900, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}


def test_overlays_set_devices_gpus_and_engines_per_pod():
    spec = _spec(_fleet(gpus_per_replica=3, drain_timeout_s=40, prestop_sleep_s=7))
    cpu, gpu, multi = (_objects(spec, o) for o in ("cpu", "gpu", "multi-gpu"))
    engine = cpu["Deployment", "chat-v1-on-demand"]["spec"]["template"]["spec"]
    assert engine["terminationGracePeriodSeconds"] == 7 + 40 + 15
    (box,) = engine["containers"]
    assert box["image"] == "registry.example/llmfleet:0.1.0-cpu"
    assert box["args"][-2:] == ["--device", "cpu"] and "--drain-timeout" in box["args"]
    assert box["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert (box["readinessProbe"]["httpGet"]["path"], box["livenessProbe"]["httpGet"]["path"],
            box["startupProbe"]["httpGet"]["path"]) == ("/ready", "/health", "/health")
    assert "nvidia.com/gpu" not in box["resources"]["limits"]
    (box,) = gpu["Deployment", "chat-v1-on-demand"]["spec"]["template"]["spec"]["containers"]
    assert box["image"] == "registry.example/llmfleet:0.1.0-cuda"
    assert box["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = multi["Deployment", "chat-v1-on-demand"]["spec"]["template"]["spec"]
    assert [(c["name"], c["ports"][0]["containerPort"], c["resources"]["limits"]["nvidia.com/gpu"])
            for c in pod["containers"]] == [("engine", 8000, "1"), ("engine-1", 8001, "1"), ("engine-2", 8002, "1")]
    assert [c["args"][c["args"].index("--kv-events-endpoint") + 1] for c in pod["containers"]] == [
        "tcp://0.0.0.0:5557", "tcp://0.0.0.0:5559", "tcp://0.0.0.0:5561"]
    assert [p["name"] for p in multi["Service", "chat-v1"]["spec"]["ports"]] == ["http-1", "http-2", "http"]
    assert [e["port"] for e in multi["ServiceMonitor", "llmfleet-engines"]["spec"]["endpoints"]] == [
        "http", "http-1", "http-2"]
    gateway = multi["Deployment", "llmfleet-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"] == "registry.example/llmfleet:0.1.0-cpu"


def test_the_gateway_reads_the_same_fleet_yaml_and_may_watch_endpoint_slices():
    spec, text = load(str(EXAMPLE))
    objects = _objects(spec, "cpu") | {(o["kind"], o["metadata"]["name"]): o for o in built(spec, text, "cpu")}
    config = objects["ConfigMap", "llmfleet-gateway-config"]["data"]["fleet.yaml"]
    assert config == EXAMPLE.read_text()
    assert GatewayConfig.from_dict(yaml.safe_load(config)).discover_k8s == ("chat-v1", "chat-v2")
    assert objects["Role", "llmfleet-gateway"]["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]
    assert objects["Service", "chat-v1"]["spec"]["clusterIP"] == "None"
    pod = objects["Deployment", "llmfleet-gateway"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llmfleet-gateway"
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "llmfleet-gateway", "optional": True}}]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_the_repository_manifests_are_the_rendered_example():
    spec, text = load(str(EXAMPLE))
    rendered = tree(spec, text)
    kept = {str(p.relative_to(ROOT / "deploy" / "kubernetes")): p.read_text()
            for p in (ROOT / "deploy" / "kubernetes").rglob("*") if p.is_file()}
    assert sorted(kept) == sorted(rendered)
    for name, text in rendered.items():
        assert kept[name] == text, f"deploy/kubernetes/{name} differs: run llmfleet deploy render " \
                                   "--config deploy/fleet.yaml --out deploy/kubernetes"


@pytest.mark.parametrize("autoscaler", ["keda", "hpa"])
def test_kubectl_kustomize_builds_what_render_built_writes(tmp_path, autoscaler):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["deployment"]["autoscaler"] = autoscaler
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "llmfleet", "deploy", "render", "--config", str(config), "--out",
                           str(out), "--built"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for overlay in ("cpu", "gpu", "multi-gpu"):
        ours = [d for d in yaml.safe_load_all((out / "built" / f"{overlay}.yaml").read_text()) if d]
        theirs = kustomize_build(out / "overlays" / overlay)
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(map(key, theirs)) == sorted(map(key, ours))
        by_key = {key(o): o for o in ours}
        for obj in theirs:
            assert obj == by_key[key(obj)], f"{overlay}: {key(obj)} differs from kubectl kustomize's"


def test_render_command_errors_name_the_field(tmp_path):
    data = _fleet()
    bad = copy.deepcopy(data)
    bad["deployment"]["engines"]["chat-v1"]["max_replicas"] = 0
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump(bad))
    done = subprocess.run([sys.executable, "-m", "llmfleet", "deploy", "render", "--config", str(config), "--out",
                           str(tmp_path / "out"), "--overlay", "gpu"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert "deployment.engines.chat-v1.max_replicas: must be an integer >= 1" in done.stderr
    assert not Path(tmp_path / "out").exists()
