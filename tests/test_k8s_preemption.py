"""A pod's end as Kubernetes plays it (scale-down, node drain, spot preemption), end to end: two real `llmfleet
serve` replicas on 127.0.0.2 and 127.0.0.3 stand for the pods of a Service, a stand-in API server for the
EndpointSlices, the gateway discovering them. The endpoint turns terminating, the preStop wait lets the gateway
drop it, SIGTERM starts the drain: the streams open on it finish, every new request goes to the other pod, and
the process exits 0 within its drain timeout."""
from __future__ import annotations

import concurrent.futures as cf
import json
import signal
import sys

import httpx
import pytest

from llmfleet.gateway.app import create_app
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.fleet import Fleet
from llmfleet.server.background import BackgroundServer
from tests.fleet_procs import Proc, wait_until
from tests.kube_api import FakeKubeAPI, endpoint_slice, shared_port

HOSTS = ["127.0.0.2", "127.0.0.3"]
STREAM = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 300, "ignore_eos": True, "stream": True}


@pytest.fixture
def pods(tiny_checkpoint):
    port = shared_port(HOSTS)
    procs = {host: Proc([sys.executable, "-m", "llmfleet", "serve", "--model", str(tiny_checkpoint("llama")),
                         "--host", host, "--port", str(port), "--served-model-name", "tiny", "--device", "cpu",
                         "--dtype", "float32", "--num-kv-blocks", "64", "--max-model-len", "512",
                         "--drain-timeout", "240", "--log-level", "warning"], port) for host in HOSTS}
    try:
        for host, proc in procs.items():
            proc.url = f"http://{host}:{port}"
            proc.start()
        for proc in procs.values():
            proc.wait_ready(300)
        yield port, procs
    finally:
        for proc in procs.values():
            proc.kill()


def _stream(url: str) -> tuple[str, list[dict]]:
    """(the replica that served it, its chunks) of one streamed completion."""
    with httpx.stream("POST", url + "/v1/completions", json=STREAM, timeout=180) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line]
        replica = answer.headers["x-llmfleet-replica"]
    assert lines[-1] == "data: [DONE]"
    return replica, [json.loads(line[6:]) for line in lines[:-1]]


def test_a_terminating_pod_finishes_its_streams_while_the_other_takes_new_requests(pods, monkeypatch):
    port, procs = pods
    leaving, staying = (procs[h] for h in HOSTS)
    api = FakeKubeAPI()
    api.put("default", endpoint_slice("engine-a", "engine", {h: {"ready": True} for h in HOSTS}, {"http": port}))
    with BackgroundServer(api.app()) as api_url:
        monkeypatch.setenv("LLMFLEET_KUBERNETES_API", api_url)
        config = GatewayConfig(replicas=(), discover_k8s=("engine",), policy="round-robin", kv_events=False,
                               health_interval_s=0.1)
        fleet = Fleet(config)
        with BackgroundServer(create_app(config, fleet)) as url, cf.ThreadPoolExecutor(4) as pool:
            wait_until(lambda: sum(r.healthy for r in fleet.replicas) == 2, 60)
            streams = [pool.submit(_stream, url) for _ in range(2)]     # round-robin: one on each pod
            wait_until(lambda: all(r.in_flight for r in fleet.replicas), 60)
            gone = next(r for r in fleet.replicas if r.url == leaving.url)
            # the kubelet's order: the endpoint turns terminating, the preStop sleep passes, then SIGTERM
            api.put("default", endpoint_slice("engine-a", "engine", {
                HOSTS[0]: {"ready": False, "serving": True, "terminating": True}, HOSTS[1]: {"ready": True}},
                {"http": port}))
            wait_until(lambda: [r.url for r in fleet.replicas] == [staying.url], 30)
            assert gone.in_flight == 1          # its stream is still open when the drain starts
            leaving.proc.send_signal(signal.SIGTERM)
            answers = [httpx.post(url + "/v1/completions", json={**STREAM, "stream": False, "max_tokens": 2},
                                  timeout=120) for _ in range(6)]
            served = [future.result(timeout=400) for future in streams]
    assert [(a.status_code, a.headers["x-llmfleet-replica"]) for a in answers] == [(200, staying.url)] * 6
    assert sorted(replica for replica, _ in served) == sorted([leaving.url, staying.url])
    for _, chunks in served:   # both ran to max_tokens: nothing was cut by the drain
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert leaving.proc.wait(300) == 0
