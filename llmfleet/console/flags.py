"""The console flags `llmfleet serve` and `llmfleet gateway` share. Import-light: argparse only."""
from __future__ import annotations

import argparse


def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator console (/console, `llmfleet top`)")
    group.add_argument("--no-console", action="store_true", help="serve no /console and sample nothing")
    group.add_argument("--console-interval", type=float, default=None, metavar="S",
                       help="seconds between console samples (default 2; an hour of them is kept)")
    group.add_argument("--slo-ttft-ms", type=float, default=None,
                       help="goodput's time-to-first-token SLO in ms (default 500)")
    group.add_argument("--slo-tpot-ms", type=float, default=None,
                       help="goodput's time-per-output-token SLO in ms (default 50)")


def console_settings(args: argparse.Namespace, base: dict | None = None) -> dict:
    """ConsoleConfig fields: those of `base` (a YAML `console:` mapping) with the flags given on top."""
    settings = dict(base or {})
    if args.no_console:
        settings["enabled"] = False
    if args.console_interval is not None:
        settings["interval_s"] = args.console_interval
    if args.slo_ttft_ms is not None:
        settings["ttft_slo_s"] = args.slo_ttft_ms / 1000
    if args.slo_tpot_ms is not None:
        settings["tpot_slo_s"] = args.slo_tpot_ms / 1000
    return settings
