"""Processes for the gateway tests: real `llmfleet serve` replicas, fixed-answer backends, and an in-process gateway.

Every child gets this checkout on its PYTHONPATH, so it runs the code under test.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free port whose successor is free too (a KV-event endpoint uses port and port + 1)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class Proc:
    """A child process serving HTTP at `url`; `start()` returns once its /ready answers 200."""

    def __init__(self, cmd: list[str], port: int, scheme: str = "http", verify=True):
        self.cmd, self.port, self.verify = cmd, port, verify
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout: float = 180.0) -> "Proc":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[:4]} exited with {self.proc.returncode} during startup")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/ready", timeout=1, verify=self.verify).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.url} did not become ready in {timeout} s")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit status (the process drains and writes what it holds first)."""
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def control(self, **settings) -> dict:
        return httpx.post(self.url + "/control", json=settings, timeout=5).json()


def replica(checkpoint, kv_events: bool = True, num_kv_blocks: int = 96, extra: tuple[str, ...] = (),
            scheme: str = "http", verify=True) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", str(checkpoint), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks",
           str(num_kv_blocks), "--max-model-len", "512", "--max-num-seqs", "16", "--log-level", "warning"]
    if kv_events:
        cmd += ["--kv-events-endpoint", f"tcp://127.0.0.1:{free_port()}"]
    return Proc(cmd + list(extra), port, scheme, verify)


def gateway_proc(replicas: list[str], *extra: str, scheme: str = "http", verify=True) -> Proc:
    """A `llmfleet gateway` process over `replicas` (round-robin, no KV events), with `extra` flags."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(port), "--policy", "round-robin",
           "--no-kv-events", "--log-level", "warning"] + [f"--replica={url}" for url in replicas] + list(extra)
    return Proc(cmd, port, scheme, verify)


def fixed_backend(port: int | None = None, model: str = "fixed", tokens: int = 4) -> Proc:
    port = port or free_port()
    cmd = [sys.executable, "-m", "llmfleet.bench.fixed_backend", "--port", str(port), "--model", model,
           "--tokens", str(tokens)]
    return Proc(cmd, port)


@contextlib.contextmanager
def gateway(replicas: list[str], wait_healthy: bool = True, **settings):
    """An in-process gateway over `replicas`: yields (base url, its Fleet) once every replica is healthy."""
    from llmfleet.gateway.app import create_app
    from llmfleet.gateway.config import GatewayConfig, ReplicaConfig
    from llmfleet.gateway.fleet import Fleet
    from llmfleet.server.background import BackgroundServer

    config = GatewayConfig(replicas=tuple(ReplicaConfig(u) for u in replicas), **settings)
    fleet = Fleet(config)
    with BackgroundServer(create_app(config, fleet)) as url:
        if wait_healthy:
            wait_until(lambda: all(r.healthy for r in fleet.replicas), 10)
        yield url, fleet


def wait_until(predicate, timeout: float, poll: float = 0.02) -> float:
    """Seconds it took for `predicate()` to hold; AssertionError after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(poll)
    return time.monotonic() - start
