"""`llmfleet top --url URL`: the console's numbers, live in a terminal (request rate, latency percentiles,
goodput, per-replica load, spend), read from the same JSON endpoints as the /console page.

Import-light (the top-level CLI imports every command's module): httpx and rich load only in `run`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

SPEND_EVERY_S = 10.0


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet top` and its flags."""
    parser = subparsers.add_parser(name, help="live terminal view of a gateway or replica (its /console data)")
    parser.add_argument("--url", default="http://127.0.0.1:8080",
                        help="the gateway's (or a replica's) base URL (default http://127.0.0.1:8080)")
    parser.add_argument("--api-key", default=None,
                        help="an admin key: the master key or a key with metadata role admin "
                             "(default: $LLMFLEET_API_KEY, else $LLMFLEET_MASTER_KEY)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    parser.add_argument("--once", action="store_true", help="print one screen and exit")
    return parser


class Refused(Exception):
    """The console answered 4xx: no point retrying (wrong key, console off)."""


def _fetch(client, screen, spend_due: bool) -> None:
    def get(path: str, **params) -> dict:
        answer = client.get(f"/console/api/{path}", params=params)
        if 400 <= answer.status_code < 500:
            try:
                message = answer.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = answer.text[:200]
            raise Refused(f"{answer.status_code} from {path}: {message}")
        answer.raise_for_status()
        return answer.json()

    screen.add_series(get("timeseries", **({"since": screen.last_t} if screen.last_t else {})))
    screen.replicas = get("replicas")
    if spend_due:
        screen.spend = get("spend")


def run(args: argparse.Namespace) -> int:
    """Refresh until Ctrl-C (exit 0); 1 when the console refuses the key or is not there."""
    import httpx
    from rich.console import Console
    from rich.live import Live

    from llmfleet.console.terminal import Screen

    if not args.interval > 0:
        print("llmfleet top: error: --interval: must be > 0 seconds", file=sys.stderr)
        return 2
    key = args.api_key or os.environ.get("LLMFLEET_API_KEY") or os.environ.get("LLMFLEET_MASTER_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    screen, console = Screen(args.url.rstrip("/")), Console()
    with httpx.Client(base_url=screen.url, headers=headers, timeout=10.0) as client:
        try:
            if args.once:
                _fetch(client, screen, True)
                console.print(screen.render())
                return 0
            return _live(client, screen, console, args.interval, Live)
        except Refused as exc:
            print(f"llmfleet top: {screen.url}: {exc}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"llmfleet top: {screen.url}: {exc}", file=sys.stderr)
            return 1


def _live(client, screen, console, interval: float, live_type) -> int:
    import httpx

    last_spend = -SPEND_EVERY_S
    with live_type(screen.render(), console=console, auto_refresh=False) as live:
        try:
            while True:
                due = time.monotonic() - last_spend >= SPEND_EVERY_S
                try:
                    _fetch(client, screen, due)
                    screen.error = None
                    last_spend = time.monotonic() if due else last_spend
                except httpx.HTTPError as exc:   # a restart or a blip: keep the screen, say so, retry
                    screen.error = f"cannot reach {screen.url}: {exc}"
                live.update(screen.render(), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0
