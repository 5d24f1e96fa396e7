"""`llmfleet eval judge | drift | labelled-set`: LLM-as-judge over a file of requests, drift over the request
logs, and the built-in labelled set a judge is measured on. Import-light: the apps load only in `run`."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet eval` and its subcommands."""
    parser = subparsers.add_parser(name, help="evaluation: LLM-as-judge, drift monitoring")
    sub = parser.add_subparsers(dest="eval_command", required=True)
    judge = sub.add_parser("judge", help="rubric scores (or pairwise verdicts) of each row by a judge model")
    judge.add_argument("--input", required=True, help="JSONL: `llmfleet logs export` rows, or rows with prompt, "
                                                       "response (or response_a, response_b), reference, label")
    judge.add_argument("--rubric", default=None, help="rubric YAML (default: correctness against the reference)")
    judge.add_argument("--judge-model", required=True, help="the judge's model name at --base-url")
    judge.add_argument("--base-url", default="http://127.0.0.1:8000", help="OpenAI-compatible server of the judge")
    judge.add_argument("--api-key", default=None, help="its key (default: $OPENAI_API_KEY)")
    judge.add_argument("--output", default=None, help="write each row's verdict here as JSONL")
    judge.add_argument("--concurrency", type=int, default=4, help="verdicts asked at once")
    judge.add_argument("--timeout", type=float, default=300.0, help="seconds one verdict may take")
    judge.add_argument("--record", default=None, metavar="DEVICE",
                       help="also write the summary as a benchmark JSON (benchmarks/results/DEVICE/)")
    labelled = sub.add_parser("labelled-set", help="write the built-in labelled set (graded rows and pairs)")
    labelled.add_argument("-o", "--out", required=True)
    drift = sub.add_parser("drift", help="drift of the request logs against a reference window")
    _drift_arguments(drift)
    return parser


def _drift_arguments(drift: argparse.ArgumentParser) -> None:
    drift.add_argument("--input", default=None, help="`llmfleet logs export` JSONL (or give --log-dir)")
    drift.add_argument("--log-dir", default=None, help="the encrypted request logs themselves")
    drift.add_argument("--key-file", default=None, help="their key (default: $LLMFLEET_REQUEST_LOG_KEY_FILE)")
    drift.add_argument("--scores", default=None, help="`llmfleet eval judge --output` JSONL, joined by request_id")
    drift.add_argument("--window", default="1h", help="window length: 30m, 1h, 1d (default 1h)")
    drift.add_argument("--step", default=None, help="how far windows move (default: the window)")
    drift.add_argument("--reference", default=None, help="the reference: the first this long (default: a window)")
    drift.add_argument("--min-count", type=int, default=20, help="requests a window needs before it may alert")
    drift.add_argument("--psi-alert", type=float, default=0.25)
    drift.add_argument("--mmd-alpha", type=float, default=0.01)
    drift.add_argument("--embedding-url", default=None, help="/v1/embeddings server for the MMD of prompts and "
                                                             "answers (default: scalars only)")
    drift.add_argument("--embedding-model", default=None)
    drift.add_argument("--report", default=None, help="write the PNG report here")
    drift.add_argument("--json", default=None, help="write every window's figures here")
    drift.add_argument("--alert-webhook-url", default=None, help="send alerts here (tenancy's budget webhook)")
    drift.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                       help="keep going: recompute this often, serve gauges on --metrics-port")
    drift.add_argument("--metrics-port", type=int, default=9464)


def run(args: argparse.Namespace) -> int:
    """2 for bad flags or input (the message names the field)."""
    from llmfleet.apps.endpoint import EndpointError

    try:
        if args.eval_command == "judge":
            return asyncio.run(_judge(args))
        if args.eval_command == "labelled-set":
            return _labelled(args)
        from llmfleet.entrypoints.eval_drift import run_drift

        return asyncio.run(run_drift(args))
    except (ValueError, OSError, EndpointError) as exc:
        print(f"llmfleet eval {args.eval_command}: error: {exc}", file=sys.stderr)
        return 2


def _labelled(args: argparse.Namespace) -> int:
    from llmfleet.apps.evals.labelled import labelled_set

    rows = labelled_set()
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


async def _judge(args: argparse.Namespace) -> int:
    import os

    from llmfleet.apps.endpoint import Endpoint
    from llmfleet.apps.evals.judge import Judge
    from llmfleet.apps.evals.rubric import CORRECTNESS, load_rubric
    from llmfleet.apps.evals.runner import judge_rows, read_rows, summary

    if args.concurrency < 1:
        raise ValueError(f"concurrency: must be at least 1, got {args.concurrency}")
    rubric = load_rubric(args.rubric) if args.rubric else CORRECTNESS
    rows = read_rows(args.input)
    endpoint = Endpoint(args.base_url, args.api_key or os.environ.get("OPENAI_API_KEY"), args.timeout)
    try:
        results = await judge_rows(Judge(endpoint, args.judge_model), rubric, rows, args.concurrency)
    finally:
        await endpoint.close()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    report = summary(rubric, results)
    if args.record:
        from llmfleet.bench.results import write_result

        record = {**report, "workload": "labelled-set", "shape": args.judge_model, "device": args.record,
                  "rubric": rubric.name, "input": args.input}
        report["written"] = str(write_result(record, "judge"))
    print(json.dumps(report, indent=2))
    return 0
