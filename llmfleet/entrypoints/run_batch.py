"""`llmfleet run-batch -i requests.jsonl -o results.jsonl [--model ...]`: an OpenAI batch file, offline.

Each input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions" |
"/v1/embeddings", "body": {...}}`; each output line is OpenAI's batch result line, in input order. A progress bar
shows the requests done (`--no-progress` hides it). Exit status 0 when every line got a 200 answer, 1 otherwise,
2 for invalid flags.
"""
from __future__ import annotations

import argparse
import sys

from llmfleet.entrypoints.serve import ENGINE_FLAGS, add_engine_arguments


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help="run an OpenAI batch file (JSONL) offline",
                                   description="Run the requests of an OpenAI batch input file and write their "
                                               "results, without an HTTP server.")
    parser.add_argument("-i", "--input-file", required=True, help="JSONL batch input")
    parser.add_argument("-o", "--output-file", required=True, help="JSONL results, one line per input line")
    parser.add_argument("--model", default=None,
                        help="model folder, demo model name or benchmark shape (default: the built-in demo model)")
    parser.add_argument("--served-model-name", nargs="+", default=None,
                        help="names the lines' `model` may use (default: the model's own name)")
    parser.add_argument("--max-concurrency", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import asyncio

    from llmfleet.entrypoints.default_model import resolve_served_model
    from llmfleet.protocol.config import EngineConfig
    from llmfleet.server.config import ServerConfig

    try:
        model, served_name = resolve_served_model(args.model)
        engine = EngineConfig(model=model, **{f: getattr(args, f) for f in ENGINE_FLAGS
                                              if getattr(args, f) is not None})
        names = tuple(args.served_model_name or ([served_name] if served_name else []))
        if args.max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be >= 1, got {args.max_concurrency}")
        server = ServerConfig(served_model_names=names, max_waiting_requests=max(1024, args.max_concurrency))
    except ValueError as exc:
        print(f"llmfleet run-batch: error: {exc}", file=sys.stderr)
        return 2
    from llmfleet.server.batches.offline import run_batch_file

    ok, failed = asyncio.run(run_batch_file(server, engine, args.input_file, args.output_file, args.max_concurrency,
                                            progress=not args.no_progress))
    print(f"{ok} succeeded, {failed} failed; results in {args.output_file}", file=sys.stderr)
    return 0 if failed == 0 else 1
