"""`llmfleet <command>`: each command lives in its feature's module, which defines `add_parser` and `run`.

Modules are imported only for the command that runs (plus argparse registration, which must stay import-light).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "generate": "llmfleet.entrypoints.generate",
    "serve": "llmfleet.entrypoints.serve",
    "gateway": "llmfleet.entrypoints.gateway",
    "bench": "llmfleet.bench.cli",
    "run-batch": "llmfleet.entrypoints.run_batch",
    "logs": "llmfleet.entrypoints.logs",
    "autoscale": "llmfleet.autoscale.cli",
    "deploy": "llmfleet.deploy.cli",
    "top": "llmfleet.entrypoints.top",
    "ray": "llmfleet.rayserve.cli",
    "eval": "llmfleet.entrypoints.eval",
    "distill": "llmfleet.entrypoints.distill",
    "prune": "llmfleet.entrypoints.prune",
    "export": "llmfleet.entrypoints.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmfleet",
        description="LLM serving: a continuous-batching engine, an OpenAI-compatible server and a fleet gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command])
    return module.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
