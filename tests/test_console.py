"""The operator console against a real `llmfleet gateway` over two real `llmfleet serve` replicas of a tiny model,
under a short load, with tenancy on: only admins get in (page and JSON alike); in headless Chromium the page draws
every chart with data and raises no JavaScript error; a screenshot is not blank; a drain click drains the replica
(the gateway reports it and routes nothing more to it) and undrain reverses it; `llmfleet top` renders under a
pseudo terminal; a replica's own /console shows that replica alone.

Chromium is Debian's `chromium` package (scripts/install.sh --test), driven by Playwright; no browser is
downloaded."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import yaml

try:
    from fleet_procs import ROOT, gateway_proc, replica, wait_until
    from png_pixels import distinct_colours
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import ROOT, gateway_proc, replica, wait_until
    from tests.png_pixels import distinct_colours

MASTER = "sk-master-console-test"
CHROMIUM = "/usr/bin/chromium"
PROMPT = "The quick brown fox jumps over the lazy dog, and the serving system batches every running sequence. "
API = ("/console", "/console/api/timeseries", "/console/api/replicas", "/console/api/spend",
       "/console/static/console.js")


def _load(url: str, key: str, stop: threading.Event) -> None:
    """Requests for the plain model and the split one, until `stop`: shared prompt prefixes, a few tokens each."""
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        i = 0
        while not stop.is_set():
            i += 1
            model = "chat" if i % 3 == 0 else "tiny"
            client.post("/v1/completions", json={"model": model, "prompt": PROMPT * 2 + str(i % 4), "max_tokens": 6})


@pytest.fixture(scope="module")
def fleet(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    (folder / "prices.json").write_text(json.dumps({m: {"input": 100.0, "output": 1000.0} for m in ("tiny", "chat")}))
    replicas = [replica(tiny_checkpoint("llama"), kv_events=False).start() for _ in range(2)]
    gateway, stop, threads = None, threading.Event(), []
    try:
        for proc in replicas:
            proc.wait_ready(240)
        (folder / "fleet.yaml").write_text(yaml.safe_dump({"models": {"chat": [
            {"version": "v1", "weight": 50, "replicas": [replicas[0].url]},
            {"version": "v2", "weight": 50, "replicas": [replicas[1].url]}]}}))
        gateway = gateway_proc([p.url for p in replicas], "--config", str(folder / "fleet.yaml"), "--master-key",
                               MASTER, "--database-url", f"sqlite:///{folder / 'keys.db'}", "--price-file",
                               str(folder / "prices.json"), "--console-interval", "0.5").start().wait_ready(60)
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=60)
        assert admin.post("/team/new", json={"team_id": "search", "max_budget": 100.0}).status_code == 200
        tenant = admin.post("/key/generate", json={"team_id": "search", "key_alias": "search-bot",
                                                   "max_budget": 50.0, "soft_budget": 0.001}).json()["key"]
        operator = admin.post("/key/generate", json={"key_alias": "ops", "metadata": {"role": "admin"}}).json()["key"]
        threads = [threading.Thread(target=_load, args=(gateway.url, tenant, stop), daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        yield SimpleNamespace(url=gateway.url, replicas=[p.url for p in replicas], tenant=tenant, operator=operator,
                              admin=admin)
        admin.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        for proc in replicas + ([gateway] if gateway else []):
            proc.kill()


def test_only_admins_open_the_console(fleet):
    for path in API:
        assert httpx.get(fleet.url + path).status_code == 401, path
        assert httpx.get(fleet.url + path, headers={"authorization": "Bearer sk-wrong"}).status_code == 401, path
        refused = httpx.get(fleet.url + path, headers={"authorization": f"Bearer {fleet.tenant}"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", path
        for key in (MASTER, fleet.operator):
            assert httpx.get(fleet.url + path, auth=("admin", key)).status_code == 200, path
    challenge = httpx.get(fleet.url + "/console")
    assert challenge.headers["www-authenticate"].startswith('Basic realm="llmfleet console"')
    drain = httpx.post(fleet.url + "/console/api/replicas/drain", json={"url": fleet.replicas[0]},
                       headers={"authorization": f"Bearer {fleet.tenant}"})
    assert drain.status_code == 403
    assert not fleet.admin.get("/fleet/replicas").json()["replicas"][0]["draining"]


def test_console_api_errors_are_clear(fleet):
    auth = ("admin", MASTER)
    bad = httpx.get(fleet.url + "/console/api/timeseries?since=soon", auth=auth)
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("since:")
    unknown = httpx.post(fleet.url + "/console/api/replicas/drain", json={"url": "http://nowhere:1"}, auth=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "replica_not_found"
    assert httpx.post(fleet.url + "/console/api/replicas/drain", json={}, auth=auth).status_code == 400
    # a cross-site form cannot drain: it sends neither JSON nor this origin
    form = httpx.post(fleet.url + "/console/api/replicas/drain", content=json.dumps({"url": fleet.replicas[0]}),
                      headers={"content-type": "text/plain"}, auth=auth)
    assert form.status_code == 415
    foreign = httpx.post(fleet.url + "/console/api/replicas/drain", json={"url": fleet.replicas[0]}, auth=auth,
                         headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "cross_origin"
    assert httpx.get(fleet.url + "/console/api/replicas/drain", auth=auth).status_code == 405
    assert httpx.get(fleet.url + "/console/static/../app.py", auth=auth).status_code == 404


@pytest.fixture(scope="module")
def page(fleet):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800}, http_credentials={
            "username": "ops", "password": fleet.operator, "send": "always"})
        tab = context.new_page()
        tab.errors = []
        tab.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
        tab.on("console", lambda msg: tab.errors.append(f"console: {msg.text} at {msg.location}")
               if msg.type == "error" else None)
        tab.goto(fleet.url + "/console")
        yield tab
        browser.close()


def test_every_chart_draws_data_without_errors(page, tmp_path):
    page.wait_for_function("() => { const c = window.llmfleetConsole; if (!c || c.state.polls < 2) return false;"
                           " const p = c.points(); return Object.keys(p).length > 0 &&"
                           " Object.values(p).every((n) => n > 0) && c.spendPoints() > 0; }", timeout=60_000)
    points = page.evaluate("window.llmfleetConsole.points()")
    assert set(points) == {"requests", "tokens", "goodput", "slo", "ttft", "tpot", "e2e", "queue", "running",
                           "waiting", "kv", "prefix", "routing", "retries", "circuit", "splits"}
    assert page.locator("#replicas tbody tr").count() == 2
    assert page.locator("#by-key").inner_text().count("search-bot") == 1
    assert "soft budget" in page.locator("#alerts").inner_text()
    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot))
    assert distinct_colours(shot.read_bytes()) > 50   # charts, text and badges: far from a blank page
    assert page.errors == []


def _served_by(fleet, n: int) -> set[str]:
    headers = {"authorization": f"Bearer {fleet.tenant}"}
    return {httpx.post(fleet.url + "/v1/completions", headers=headers, timeout=60, json={
        "model": "tiny", "prompt": "drain", "max_tokens": 1}).headers["x-llmfleet-replica"] for _ in range(n)}


def _row(fleet, url: str) -> dict:
    rows = fleet.admin.get("/fleet/replicas").json()["replicas"]
    return next(r for r in rows if r["url"] == url)


def test_a_drain_click_drains_the_replica(page, fleet):
    first, second = fleet.replicas
    page.locator(f'#replicas tr[data-url="{first}"] button[data-action=drain]').click()
    wait_until(lambda: _row(fleet, first)["draining"], 10)
    assert _row(fleet, first)["drained_by"] == "operator" and not _row(fleet, second)["draining"]
    page.locator(f'#replicas tr[data-url="{first}"] button[data-action=undrain]').wait_for(timeout=10_000)
    assert _served_by(fleet, 6) == {second}
    page.locator(f'#replicas tr[data-url="{first}"] button[data-action=undrain]').click()
    wait_until(lambda: not _row(fleet, first)["draining"], 10)
    assert _served_by(fleet, 6) == {first, second}
    assert page.errors == []


def _screen_text(master: int, until, timeout: float) -> str:
    screen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                screen += os.read(master, 65536)
            except OSError:
                break
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
            if until(text):
                return text
    raise AssertionError(f"the screen never showed what was expected:\n{screen.decode('utf-8', 'replace')[-3000:]}")


def _wait_draining(proc, master: int, timeout: float) -> int:
    """proc's exit code, reading the terminal meanwhile: a full pty buffer would block the screen's last writes
    (its restore on exit among them), and the process with it."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                os.read(master, 65536)
            except OSError:
                break
    return proc.wait(max(0.0, deadline - time.monotonic()))


def test_top_renders_under_a_pseudo_terminal(fleet):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 170, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmfleet", "top", "--url", fleet.url, "--api-key",
                             fleet.operator, "--interval", "0.5"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    try:
        hosts = [url.split("://")[1] for url in fleet.replicas]
        text = _screen_text(master, lambda t: all(h in t for h in hosts) and "Spend, last 60 min: $" in t
                            and re.search(r"p50 \d", t), 60)
        assert re.search(r"Time to first token\s*│\s*p50 [\d.]+\s+p90 [\d.]+\s+p99 [\d.]+\s+ms", text)
        assert re.search(r"Request rate\s*│\s*total [\d.]+\s+errors [\d.]+\s+req/s", text)
        assert "policy round-robin" in text and "healthy" in text
        os.killpg(proc.pid, signal.SIGINT)
        assert _wait_draining(proc, master, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_top_refuses_a_tenant_key(fleet, capsys):
    from llmfleet.entrypoints.cli import build_parser
    from llmfleet.entrypoints.top import run

    args = build_parser().parse_args(["top", "--url", fleet.url, "--api-key", fleet.tenant, "--once"])
    assert run(args) == 1
    assert "403 from timeseries: the console needs the master key or a key with metadata role: admin" in \
        capsys.readouterr().err


def test_a_replica_console_shows_that_replica_alone(fleet):
    url = fleet.replicas[1]   # no key on the replicas: the console answers loopback clients
    wait_until(lambda: httpx.get(url + "/console/api/timeseries").json()["t"], 30)
    series = httpx.get(url + "/console/api/timeseries").json()
    assert series["kind"] == "replica" and series["policy"] is None
    assert [c["id"] for c in series["charts"]] == ["requests", "tokens", "ttft", "tpot", "e2e", "queue", "goodput",
                                                  "slo", "running", "waiting", "kv", "prefix"]
    assert list(series["series"]["running"]) == [f"http://127.0.0.1:{url.rsplit(':', 1)[1]}"]
    (row,) = httpx.get(url + "/console/api/replicas").json()["replicas"]
    assert row["healthy"] and not row["draining"] and row["model"] == "tiny"
    assert httpx.post(url + "/console/api/replicas/drain", json={"url": url}).status_code == 409
    assert httpx.get(url + "/console/api/spend").json()["enabled"] is False
    assert "<title>llmfleet console</title>" in httpx.get(url + "/console").text
