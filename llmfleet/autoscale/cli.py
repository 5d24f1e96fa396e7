"""`llmfleet autoscale simulate | figures`: run a policy over a load trace on a fleet of modelled replicas.

Import-light at parser time (the top-level CLI builds every command's parser): numpy and the simulator are
imported in `run`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet autoscale` and its subcommands."""
    parser = subparsers.add_parser(name, help="autoscaling policy and fleet simulator",
                                   description="Simulate an autoscaling policy over a load trace.")
    sub = parser.add_subparsers(dest="autoscale_command", required=True)
    simulate = sub.add_parser("simulate", help="one policy over one trace: SLO attainment, replica-hours, cost")
    add_fleet_arguments(simulate)
    simulate.add_argument("--trace", default="bursty", help="diurnal | bursty | a CSV/JSON file (time_s, rate)")
    simulate.add_argument("--policy", default="queue",
                          help="queue | ray-default | kv | ttft | static | a YAML/JSON policy file")
    simulate.add_argument("--predictive", action="store_true", help="add the diurnal forecast to the policy")
    simulate.add_argument("--spot", action="store_true", help="replicas above --on-demand-floor run on spot")
    simulate.add_argument("--on-demand-floor", type=int, default=0, help="replicas kept on-demand under spot")
    simulate.add_argument("--out", default=None, help="folder for summary.json, series.csv and simulation.png")
    simulate.add_argument("--record", action="store_true",
                          help="also write the summary as a benchmark record under benchmarks/results/cpu-2-core/")
    figures = sub.add_parser("figures", help="the bursty-trace study: policy vs static peak, start-up swapped")
    add_fleet_arguments(figures)
    figures.add_argument("--results-out", default="benchmarks/results", help="where the records go")
    return parser


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-replicas", type=int, default=1000)
    parser.add_argument("--peak-rps", type=float, default=None,
                        help="the built-in traces' peak (default: 80%% of --max-replicas at the SLO rate)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", default="llama3-8b", help="whose measured curves model a replica")
    parser.add_argument("--results-dir", default=None, help="folder of the bench records (default: nvidia-h200)")
    parser.add_argument("--startup-s", default=None,
                        help="start-up time range LOW-HIGH seconds (default: the measured llmfleet range; "
                             "93-112 is vLLM's)")
    parser.add_argument("--ttft-slo-s", type=float, default=0.5)
    parser.add_argument("--on-demand-price", type=float, default=4.00, help="per GPU-hour (an example)")
    parser.add_argument("--spot-price", type=float, default=1.60, help="per GPU-hour (an example)")
    parser.add_argument("--preemptions-per-hour", type=float, default=0.05, help="per spot replica")
    parser.add_argument("--preemption-notice-s", type=float, default=120.0)


def run(args: argparse.Namespace) -> int:
    """2 for invalid arguments (the message names the field)."""
    from llmfleet.autoscale import study

    try:
        if args.autoscale_command == "figures":
            for path in study.write_figures(args):
                print(path)
            return 0
        summary = study.simulate_from_args(args)
    except ValueError as exc:
        print(f"llmfleet autoscale: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if args.out:
        print(f"wrote {Path(args.out) / 'simulation.png'}", file=sys.stderr)
    return 0
