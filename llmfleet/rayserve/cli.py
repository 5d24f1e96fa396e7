"""`llmfleet ray serve --config fleet.yaml`: deploy the fleet on Ray Serve and keep it up until stopped.

Import-light (the top-level CLI imports every command's module to build its parser): Ray is imported in `run`.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet ray` and its `serve` command."""
    parser = subparsers.add_parser(name, help="run the fleet on a Ray cluster (Ray Serve)",
                                   description="Run llmfleet engines as Ray Serve deployments.")
    commands = parser.add_subparsers(dest="ray_command", required=True)
    serve = commands.add_parser("serve", help="deploy fleet.yaml's models on Ray Serve",
                                description="One deployment per model version, each replica an llmfleet engine, "
                                            "the OpenAI API on Ray Serve's HTTP proxy (docs/ray_serve.md).")
    serve.add_argument("--config", required=True, help="fleet.yaml: models -> versions with engine and replicas")
    serve.add_argument("--address", default=None,
                       help="the Ray cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, else "
                            "a local Ray instance started here)")
    serve.add_argument("--host", default=None, help="override the config's host for Serve's HTTP proxy")
    serve.add_argument("--port", type=int, default=None, help="override the config's port")
    serve.add_argument("--keep", action="store_true",
                       help="exit once deployed and leave the app running on the cluster (with --address)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Deploy; block until SIGINT / SIGTERM, then delete the app (its replicas drain first). 2 for a bad config."""
    from llmfleet.rayserve.config import load_config

    try:
        config = load_config(args.config)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        config = dataclasses.replace(config, **overrides)
    except (OSError, ValueError) as exc:
        print(f"llmfleet ray serve: error: {exc}", file=sys.stderr)
        return 2
    if args.keep and args.address is None:
        print("llmfleet ray serve: error: --keep needs --address (a local Ray instance ends with this process)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper() if config.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray

    from llmfleet.rayserve.app import run as deploy

    ray.init(address=args.address)
    deploy(config)
    if args.keep:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    _delete(config)
    ray.shutdown()
    return 0


def _delete(config) -> None:
    """Delete the app (Ray lets each replica finish its requests, up to its drain timeout), waiting a bounded time:
    a Ctrl-C in a terminal also reaches a local Ray instance's own processes, which may then never confirm."""
    from ray import serve

    grace = max(v.server.drain_timeout for v in config.versions()) + 15.0
    logger = logging.getLogger(__name__)
    logger.info("stopping: deleting app %r (up to %.0f s)", config.app_name, grace)
    deleting = threading.Thread(target=serve.delete, args=(config.app_name,), daemon=True)
    deleting.start()
    deleting.join(grace)
    if deleting.is_alive():
        logger.warning("the cluster did not confirm the app's deletion within %.0f s", grace)
