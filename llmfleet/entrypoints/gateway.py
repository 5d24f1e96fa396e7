"""`llmfleet gateway`: one OpenAI-compatible endpoint over many replicas.

Import-light on purpose (the top-level CLI imports every command's module to build its parser): the gateway's
modules (Starlette, httpx, ZeroMQ) are imported only in `run`. Flags override what `--config fleet.yaml` sets.
"""
from __future__ import annotations

import argparse
import sys

from llmfleet.console.flags import add_console_arguments, console_settings
from llmfleet.apps.flags import add_apps_arguments, apps_config
from llmfleet.apps.retrieval.flags import add_retrieval_arguments, retrieval_config
from llmfleet.protocol.tls import add_tls_arguments, tls_config
from llmfleet.tenancy.flags import add_tenancy_arguments, tenancy_config

POLICY_NAMES = ("prefix-aware", "round-robin", "least-loaded", "power-of-two", "session")


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet gateway` and its flags."""
    parser = subparsers.add_parser(name, help="fleet gateway over several replicas",
                                   description="Route OpenAI API requests over several replicas.")
    parser.add_argument("--replica", action="append", default=None, metavar="URL[,kv_events=ENDPOINT]",
                        help="a replica's base URL (repeat for each); kv_events= names its KV-event endpoint")
    parser.add_argument("--discover-k8s", action="append", default=None, metavar="SERVICE[.NAMESPACE]",
                        help="the ready endpoints of this Kubernetes Service are replicas, followed through its "
                             "EndpointSlices (in a pod: its service account; else $LLMFLEET_KUBERNETES_API, e.g. "
                             "kubectl proxy's URL); repeat for each Service")
    parser.add_argument("--config", default=None, help="fleet.yaml: any GatewayConfig field, replicas as a list")
    parser.add_argument("--policy", default=None, choices=POLICY_NAMES, help="routing policy (default prefix-aware)")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8080)")
    parser.add_argument("--tokenizer", default=None,
                        help="the model's folder (tokenizer.json) or demo model name, for prefix-aware routing")
    parser.add_argument("--block-size", type=int, default=None, help="the replicas' KV block size (default 16)")
    parser.add_argument("--max-retries", type=int, default=None, help="other replicas tried before failing")
    parser.add_argument("--no-kv-events", action="store_true", help="do not follow replicas' KV events")
    parser.add_argument("--log-level", default=None, choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--replica-ca-certs", default=None,
                        help="PEM CA bundle that https:// replicas' certificates are verified with "
                             "(default: the system's CAs)")
    add_tls_arguments(parser)
    add_tenancy_arguments(parser)
    add_console_arguments(parser)
    add_apps_arguments(parser)
    add_retrieval_arguments(parser)
    return parser


def build_config(args: argparse.Namespace):
    """GatewayConfig from the optional YAML file, then the flags; ValueError names the bad field."""
    from llmfleet.gateway.config import GatewayConfig, load_yaml, parse_replica_flag

    data = load_yaml(args.config) if args.config else {}
    flags = {"policy": args.policy, "host": args.host, "port": args.port, "tokenizer": args.tokenizer,
             "block_size": args.block_size, "max_retries": args.max_retries, "log_level": args.log_level,
             "kv_events": False if args.no_kv_events else None, "replica_ca_certs": args.replica_ca_certs,
             "tenancy": tenancy_config(args), "tls": tls_config(args), "apps": apps_config(args)}
    data.update({k: v for k, v in flags.items() if v is not None})
    data["console"] = console_settings(args, data.get("console"))
    if args.replica:
        data["replicas"] = [parse_replica_flag(url) for url in args.replica]
    if args.discover_k8s:
        data["discover_k8s"] = [*(data.get("discover_k8s") or ()), *args.discover_k8s]
    return GatewayConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 for invalid flags (the message names the field)."""
    import logging

    level = (args.log_level or "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per health check otherwise
    try:
        config = build_config(args)
        if config.discover_k8s:  # fail here, with the reason, rather than in the app's startup
            from llmfleet.gateway.k8s_api import KubernetesAPI
            KubernetesAPI.from_environment()
        import uvicorn

        from llmfleet.gateway.app import create_app
        app = create_app(config)
        retrieval = _mount_retrieval(app, args, config)
    except (ValueError, OSError) as exc:
        print(f"llmfleet gateway: error: {exc}", file=sys.stderr)
        return 2
    tls = config.tls.uvicorn_options() if config.tls else {}
    # lifespan "on": a startup that fails (the key store unreachable) stops the gateway instead of serving without
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False,
                    lifespan="on", **tls)
    finally:
        if retrieval is not None:   # every acknowledged write is already durable; this closes files
            import asyncio
            asyncio.run(retrieval.close())
    return 0


def _mount_retrieval(app, args: argparse.Namespace, config):
    """/v1/vector_stores on the gateway (embedding through the gateway itself unless told otherwise)."""
    own_url = f"{'https' if config.tls else 'http'}://127.0.0.1:{config.port}"
    retrieval = retrieval_config(args, own_url, config.tokenizer,
                                 config.tenancy.master_key if config.tenancy else None)
    if retrieval is None:
        return None
    from llmfleet.apps.retrieval.mount import mount_retrieval
    return mount_retrieval(app, retrieval)
