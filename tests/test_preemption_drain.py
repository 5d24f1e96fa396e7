"""Spot preemption end to end: two real `llmfleet serve` replicas behind a real `llmfleet gateway`, one polling a
stand-in for AWS's instance metadata (IMDSv2: session token first). Under load the notice arrives: the replica
says "draining" on /ready, the gateway stops routing to it, no non-streaming request fails, and it exits 0."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import datetime as dt
import http.server
import json
import threading
import time

import httpx

try:
    from fleet_procs import gateway_proc, replica, wait_until
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import gateway_proc, replica, wait_until

from llmfleet.server.lifecycle import Lifecycle
from llmfleet.server.preemption import PreemptionWatcher, is_notice, seconds_left

ACTION_PATH = "/latest/meta-data/spot/instance-action"
TOKEN = "token-123"


class Metadata(http.server.ThreadingHTTPServer):
    """The instance metadata service: 404 on instance-action until `notice` is set; a token is required."""
    notice = False
    notice_s = 120.0   # the termination time the notice names, from now
    token_requests = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.server.token_requests += 1
            self._answer(200, TOKEN)
        else:
            self._answer(400, "bad token request")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._answer(401, "")
        elif self.path != ACTION_PATH or not self.server.notice:
            self._answer(404, "Not Found")
        else:
            end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.server.notice_s)
            self._answer(200, json.dumps({"action": "terminate", "time": end.strftime("%Y-%m-%dT%H:%M:%SZ")}))

    def _answer(self, status: int, body: str):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_what_counts_as_a_notice():
    assert is_notice(200, '{"action": "terminate"}') and is_notice(200, "TRUE\n")   # AWS, GCE
    assert not is_notice(200, "FALSE") and not is_notice(404, "Not Found") and not is_notice(401, "")


def test_the_notices_termination_time_bounds_the_drain():
    now = dt.datetime(2026, 12, 2, 16, 0, 0, tzinfo=dt.timezone.utc)
    assert seconds_left('{"action": "stop", "time": "2026-12-02T16:02:00Z"}', now) == 120.0
    assert seconds_left("TRUE", now) is None and seconds_left('{"action": "terminate"}', now) is None


def test_the_watcher_fetches_a_token_then_drains_on_the_notice():
    metadata = Metadata(("127.0.0.1", 0), _Handler)
    metadata.notice, metadata.notice_s = True, 40.0
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    lifecycle = Lifecycle(drain_timeout=60.0)
    try:
        url = f"http://127.0.0.1:{metadata.server_address[1]}{ACTION_PATH}"
        asyncio.run(asyncio.wait_for(PreemptionWatcher(url, lifecycle, interval_s=0.05).run(), 10))
    finally:
        metadata.shutdown()
    assert lifecycle.draining and metadata.token_requests == 1
    assert 25.0 <= lifecycle.drain_timeout <= 35.0   # 40 s left (whole seconds), less the exit margin


def _routed(gateway_url: str) -> dict[str, dict]:
    return {r["url"]: r for r in httpx.get(gateway_url + "/fleet/replicas", timeout=5).json()["replicas"]}


def test_a_preempted_replica_drains_out_of_the_fleet_losing_no_request(tiny_checkpoint):
    metadata = Metadata(("127.0.0.1", 0), _Handler)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    notice_url = f"http://127.0.0.1:{metadata.server_address[1]}{ACTION_PATH}"
    ckpt = tiny_checkpoint("llama")
    spot = replica(ckpt, kv_events=False, extra=("--preemption-notice-url", notice_url, "--preemption-poll-s",
                                                   "0.2", "--drain-timeout", "60"))
    steady = replica(ckpt, kv_events=False)
    procs = [spot.start(), steady.start()]
    gw = None
    try:
        for p in procs:
            p.wait_ready(240)
        gw = gateway_proc([spot.url, steady.url]).start().wait_ready(60)
        wait_until(lambda: all(r["healthy"] for r in _routed(gw.url).values()), 20)
        statuses, stop = [], threading.Event()

        def load():
            body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 24, "ignore_eos": True}
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    answer = client.post(gw.url + "/v1/completions", json=body)
                    finish = answer.json()["choices"][0]["finish_reason"] if answer.status_code == 200 else None
                    statuses.append((answer.status_code, finish, answer.headers.get("x-llmfleet-replica")))

        with cf.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load) for _ in range(4)]
            wait_until(lambda: _routed(gw.url)[spot.url]["routed"] >= 4 and len(statuses) >= 4, 120)
            assert metadata.token_requests >= 1   # the IMDSv2 path: 401, a token, then polls with it
            metadata.notice = True
            wait_until(lambda: _routed(gw.url)[spot.url]["draining"] or not _routed(gw.url)[spot.url]["healthy"], 10)
            routed_at_notice = _routed(gw.url)[spot.url]["routed"]
            done_at_notice = len(statuses)
            wait_until(lambda: len(statuses) >= done_at_notice + 12, 120)
            assert _routed(gw.url)[spot.url]["routed"] == routed_at_notice   # nothing new went to it
            stop.set()
            for worker in workers:
                worker.result(180)
        assert spot.proc.wait(60) == 0
        # every request answered in full (none aborted by the drain), the spot replica's among them
        assert {(status, finish) for status, finish, _ in statuses} == {(200, "length")}, statuses[-5:]
        assert {url for *_, url in statuses} == {spot.url, steady.url}
        assert _routed(gw.url)[steady.url]["routed"] > 0
    finally:
        metadata.shutdown()
        for p in (*procs, *([gw] if gw else [])):
            p.kill()
