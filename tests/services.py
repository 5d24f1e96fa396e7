"""Real Redis and PostgreSQL for tests: started on 127.0.0.1 at free ports in temporary folders, stopped after.
Tests that need them skip, saying why, only when the binaries are missing (scripts/install.sh --test installs them).
PostgreSQL refuses to run as root: as root the server runs as the `postgres` user."""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


@contextlib.contextmanager
def running_redis():
    """A redis-server on a free port in a temporary folder: yields its URL; None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    folder, port = tempfile.mkdtemp(prefix="llmfleet-redis-"), free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url():
    with running_redis() as url:
        if url is None:
            pytest.skip("redis-server is not installed (bash scripts/install.sh --test installs it)")
        yield url


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Missing("running as root and there is no `postgres` user to run PostgreSQL as") from None
    return ["runuser", "-u", "postgres", "--"]


def _pg_binary(name: str) -> str | None:
    """On PATH, or where Debian's postgresql package puts it (/usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
        found = str(versions[-1]) if versions else None
    return found


class Missing(Exception):
    """A service cannot run here; the message says why."""


@contextlib.contextmanager
def running_postgres():
    """A PostgreSQL server on a free port in a temporary folder (initdb, pg_ctl): yields its URL; Missing when
    the binaries are not installed or, as root, there is no `postgres` user."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise Missing("PostgreSQL's initdb/pg_ctl are not installed (bash scripts/install.sh --test installs them)")
    prefix = _as_postgres_user()
    folder = Path(tempfile.mkdtemp(prefix="llmfleet-pg-"))
    data, port = folder / "data", free_port()
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"], **run)
    try:
        _wait_port(port, None, "postgres")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    try:
        with running_postgres() as url:
            yield url
    except Missing as exc:
        pytest.skip(str(exc))
