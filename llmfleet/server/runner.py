"""Running the app under uvicorn, with a graceful drain on SIGTERM.

SIGTERM (what Kubernetes and process managers send): /ready turns false and new requests get 503 while in-flight
ones finish (up to drain_timeout, then they are aborted); then uvicorn stops and the process exits 0. SIGINT
(Ctrl-C), or a second SIGTERM, skips the drain and stops the way uvicorn always does; one more forces the exit.
"""
from __future__ import annotations

import logging
import signal
import socket
from typing import Any

import uvicorn

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.config import ServerConfig
from llmfleet.server.lifecycle import Lifecycle

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains instead of stopping."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle):
        super().__init__(config)
        self.lifecycle = lifecycle
        lifecycle.on_drained = self._stop_serving
        lifecycle.on_failed = self._stop_serving

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not recorded in uvicorn's captured signals: it would re-raise them after shutdown, and the default
        # SIGTERM action would then kill the process with 143 instead of letting it exit 0.
        if sig == signal.SIGTERM and not self.lifecycle.draining and not self.should_exit:
            logger.info("SIGTERM: draining")
            self.lifecycle.request_drain()
        elif not self.should_exit:
            self.should_exit = True   # skip the drain; uvicorn still lets open responses finish for a while
        else:
            self.force_exit = True

    def _stop_serving(self) -> None:
        self.should_exit = True


def serve(config: ServerConfig, engine_config: EngineConfig, sock: socket.socket | None = None) -> int:
    """Serve until drained or interrupted; the process's exit status: 0 after a clean drain, 1 when the engine
    failed (to start, or later: the cause is in the log)."""
    lifecycle = Lifecycle(config.drain_timeout)
    app = create_app(config, engine_config, lifecycle)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                               timeout_graceful_shutdown=int(config.drain_timeout) + 5, lifespan="on",
                               **(config.tls.uvicorn_options() if config.tls else {}))
    server = DrainingServer(uv_config, lifecycle)
    server.run(sockets=[sock] if sock is not None else None)
    return 0 if server.started and lifecycle.failure is None else 1
