"""The gateway finds its replicas from Kubernetes EndpointSlices: a real HTTP server stands in for the API server,
fixed-answer backends on loopback addresses 127.0.0.2-5 for the pods, and the slices change while it runs."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

import httpx
import pytest

from llmfleet.bench.fixed_backend import create_app as backend_app
from llmfleet.gateway.app import create_app
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.fleet import Fleet
from llmfleet.gateway.k8s_api import KubernetesAPI, ServiceRef
from llmfleet.gateway.k8s_discovery import replica_urls
from llmfleet.server.background import BackgroundServer
from tests.fleet_procs import ROOT, Proc, _env, free_port, wait_until
from tests.kube_api import FakeKubeAPI, endpoint_slice, shared_port

READY, NOT_READY = {"ready": True}, {"ready": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}


def test_replica_urls_reads_ready_endpoints_and_named_ports():
    one = endpoint_slice("a", "chat", {"10.0.0.1": READY, "10.0.0.2": NOT_READY, "10.0.0.3": {}},
                         {"http": 8000, "metrics-extra": 9000})
    multi = endpoint_slice("b", "chat", {"10.0.1.1": READY}, {"http": 8000, "http-1": 8001, "kv": 5557})
    six = endpoint_slice("c", "chat", {"fd00::1": READY}, {"serve": 8000}, address_type="IPv6")
    assert replica_urls([one]) == {"http://10.0.0.1:8000", "http://10.0.0.3:8000"}   # unset ready: ready
    assert replica_urls([multi]) == {"http://10.0.1.1:8000", "http://10.0.1.1:8001"}
    assert replica_urls([six]) == {"http://[fd00::1]:8000"}                           # the only port
    assert replica_urls([endpoint_slice("d", "chat", {"10.0.2.1": READY}, {"a": 1, "b": 2})]) == set()
    assert replica_urls([one], scheme="https") == {"https://10.0.0.1:8000", "https://10.0.0.3:8000"}


def test_service_refs_and_config_fields():
    assert ServiceRef.parse("k8s://chat-v1.prod") == ServiceRef("chat-v1", "prod")
    assert ServiceRef.parse("chat").source == "k8s://chat"
    with pytest.raises(ValueError, match="discover_k8s: 'Chat_1'"):
        GatewayConfig(replicas=(), discover_k8s=("Chat_1",))
    with pytest.raises(ValueError, match="replicas: at least one"):
        GatewayConfig(replicas=())
    cfg = GatewayConfig.from_dict({"replicas": ["k8s://engine", "http://10.0.0.9:8000"],
                                   "models": {"chat": [{"version": "v1", "replicas": ["k8s://chat-v1.prod"]}]}})
    assert cfg.discover_k8s == ("engine", "chat-v1.prod")
    assert [r.url for r in cfg.replicas] == ["http://10.0.0.9:8000"]
    with pytest.raises(ValueError, match="LLMFLEET_KUBERNETES_API"):
        KubernetesAPI.from_environment({"LLMFLEET_KUBERNETES_API": "10.0.0.1:6443"})
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST is unset"):
        KubernetesAPI.from_environment({})


@pytest.fixture
def pods():
    """Fixed-answer backends on 127.0.0.2-5, one shared port: {ip: url}."""
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    port = shared_port(hosts)
    with contextlib.ExitStack() as stack:
        for host in hosts:
            stack.enter_context(BackgroundServer(backend_app(), host=host, port=port))
        yield port, {host: f"http://{host}:{port}" for host in hosts}


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """The stand-in API server, required token t1 in a token file; the gateway is pointed at it."""
    api = FakeKubeAPI(token="t1")
    token = tmp_path / "token"
    token.write_text("t1\n")
    with BackgroundServer(api.app()) as url:
        monkeypatch.setenv("LLMFLEET_KUBERNETES_API", url)
        monkeypatch.setenv("LLMFLEET_KUBERNETES_TOKEN_FILE", str(token))
        yield api, token


@contextlib.contextmanager
def _gateway(**settings):
    config = GatewayConfig(replicas=(), policy="round-robin", kv_events=False, health_interval_s=0.05, **settings)
    fleet = Fleet(config)
    with BackgroundServer(create_app(config, fleet)) as url:
        yield url, fleet


def _healthy(fleet: Fleet) -> set[str]:
    return {rep.url for rep in fleet.replicas if rep.healthy}


def _served_by(url: str, n: int, **headers) -> list[str]:
    answers = [httpx.post(url + "/v1/completions", json={"model": "fixed", "prompt": "hi", "max_tokens": 2},
                          headers=headers, timeout=10) for _ in range(n)]
    assert [a.status_code for a in answers] == [200] * n
    return [a.headers["x-llmfleet-replica"] for a in answers]


def test_the_fleet_follows_endpoint_slices_as_they_change(pods, kube):
    port, url_of = pods
    api, token = kube
    a, b, c, d = sorted(url_of)
    api.put("default", endpoint_slice("chat-1", "chat", {a: READY, b: NOT_READY}, {"http": port}))
    api.put("default", endpoint_slice("other-1", "other", {d: READY}, {"http": port}))   # another Service
    with _gateway(discover_k8s=("chat",)) as (url, fleet):
        wait_until(lambda: _healthy(fleet) == {url_of[a]}, 10)
        assert set(_served_by(url, 4)) == {url_of[a]}
        # b turns ready; a second slice of the same Service brings c
        api.put("default", endpoint_slice("chat-1", "chat", {a: READY, b: READY}, {"http": port}))
        api.put("default", endpoint_slice("chat-2", "chat", {c: {}}, {"http": port}))
        wait_until(lambda: _healthy(fleet) == {url_of[a], url_of[b], url_of[c]}, 10)
        assert sorted(_served_by(url, 6)) == sorted([url_of[a], url_of[b], url_of[c]] * 2)
        # a's pod terminates while it holds a slow request: the request finishes, nothing new goes to a
        _terminate_while_busy(api, fleet, url, url_of[a], endpoint_slice("chat-1", "chat", {a: TERMINATING, b: READY},
                                                                         {"http": port}))
        assert set(_served_by(url, 4)) == {url_of[b], url_of[c]}
        # the history expires and the token rotates: the watcher lists again with the new token
        api.token = "t2"
        token.write_text("t2")
        api.expire()
        api.delete("default", "chat-2")
        wait_until(lambda: {r.url for r in fleet.replicas} == {url_of[b]}, 10)
        assert set(_served_by(url, 3)) == {url_of[b]}
        snapshot = httpx.get(url + "/fleet/replicas").json()["replicas"]
        assert [(r["url"], r["source"]) for r in snapshot] == [(url_of[b], "k8s://chat")]
    selectors = {q.get("labelSelector") for _, q, _ in api.requests}
    assert selectors == {"kubernetes.io/service-name=chat"}
    assert {auth for *_, auth in api.requests} >= {"Bearer t1", "Bearer t2"}
    assert any(q.get("watch") == "true" for _, q, _ in api.requests)


def _terminate_while_busy(api: FakeKubeAPI, fleet: Fleet, url: str, busy: str, terminated: dict) -> None:
    """Three requests at once (round-robin: one lands on `busy`, made slow), then `terminated` is published: the
    replica leaves the fleet while its request is open, and all three answers are 200."""
    httpx.post(busy + "/control", json={"delay_s": 1.0})
    answers: list[httpx.Response] = []
    senders = [threading.Thread(target=lambda: answers.append(httpx.post(
        url + "/v1/completions", json={"model": "fixed", "prompt": "x"}, timeout=10))) for _ in range(3)]
    for sender in senders:
        sender.start()
    wait_until(lambda: any(r.url == busy and r.in_flight for r in fleet.replicas), 10)
    api.put("default", terminated)
    wait_until(lambda: busy not in {r.url for r in fleet.replicas}, 10)
    for sender in senders:
        sender.join(10)
    assert sorted(r.status_code for r in answers) == [200, 200, 200]
    assert busy in {r.headers["x-llmfleet-replica"] for r in answers}


def test_replicas_stay_while_the_api_server_refuses_and_changes_apply_once_it_answers(pods, kube):
    port, url_of = pods
    api, _ = kube
    a, b, *_ = sorted(url_of)
    api.put("default", endpoint_slice("chat-1", "chat", {a: READY}, {"http": port}))
    with _gateway(discover_k8s=("chat",)) as (url, fleet):
        wait_until(lambda: _healthy(fleet) == {url_of[a]}, 10)
        api.token = "revoked"                        # every list and watch now gets 401
        api.expire()                                 # the open watch ends; the watcher must list again, and fails
        wait_until(lambda: api.refused >= 2, 10)     # it retries, with a growing delay
        assert _served_by(url, 3) == [url_of[a]] * 3
        api.put("default", endpoint_slice("chat-1", "chat", {a: READY, b: READY}, {"http": port}))
        api.token = "t1"
        wait_until(lambda: _healthy(fleet) == {url_of[a], url_of[b]}, 40)


def test_versions_of_a_split_route_to_their_own_services(pods, kube):
    port, url_of = pods
    api, _ = kube
    a, b, c, _ = sorted(url_of)
    api.put("default", endpoint_slice("v1-x", "chat-v1", {a: READY, b: READY}, {"http": port}))
    api.put("default", endpoint_slice("v2-x", "chat-v2", {c: READY}, {"http": port}))
    models = {"chat": [{"version": "v1", "weight": 1, "replicas": ["k8s://chat-v1"]},
                       {"version": "v2", "weight": 1, "replicas": ["k8s://chat-v2.default"]}]}
    config = GatewayConfig.from_dict({"models": models, "policy": "round-robin", "kv_events": False,
                                      "health_interval_s": 0.05})
    fleet = Fleet(config)
    with BackgroundServer(create_app(config, fleet)) as url:
        wait_until(lambda: len(_healthy(fleet)) == 3, 10)
        members = {"v1": {url_of[a], url_of[b]}, "v2": {url_of[c]}}
        seen = set()
        for i in range(24):
            answer = httpx.post(url + "/v1/completions", json={"model": "chat", "prompt": "hi", "user": f"u{i}"})
            assert answer.status_code == 200
            version = answer.headers["x-llmfleet-version"]
            assert answer.headers["x-llmfleet-replica"] in members[version]
            seen.add(version)
        assert seen == {"v1", "v2"}


def test_gateway_command_discovers_a_service(pods, kube):
    port, url_of = pods
    api, _ = kube
    a = sorted(url_of)[0]
    api.put("default", endpoint_slice("engine-1", "engine", {a: READY}, {"http": port}))
    gw_port = free_port()
    gateway = Proc([sys.executable, "-m", "llmfleet", "gateway", "--discover-k8s", "engine", "--port",
                    str(gw_port), "--policy", "round-robin", "--no-kv-events", "--log-level", "warning"], gw_port)
    try:
        gateway.start().wait_ready(180)
        assert _served_by(gateway.url, 2) == [url_of[a]] * 2
    finally:
        gateway.kill()


def test_gateway_command_without_an_api_server_says_why(monkeypatch):
    env = {k: v for k, v in _env().items() if not k.startswith(("KUBERNETES_", "LLMFLEET_KUBERNETES"))}
    done = subprocess.run([sys.executable, "-m", "llmfleet", "gateway", "--discover-k8s", "engine"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "discover_k8s: not in a Kubernetes pod" in done.stderr
