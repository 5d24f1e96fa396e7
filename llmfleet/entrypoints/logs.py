"""`llmfleet logs export`: the encrypted request logs out to JSON Lines or Parquet (for evaluation and
distillation datasets). Import-light: the tenancy modules load only in `run`."""
from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet logs export` and its flags."""
    parser = subparsers.add_parser(name, help="request logs: export them as a dataset")
    sub = parser.add_subparsers(dest="logs_command", required=True)
    export = sub.add_parser("export", help="decrypt the request logs into JSON Lines or Parquet")
    export.add_argument("--log-dir", required=True, help="the server's or gateway's --request-log-dir")
    export.add_argument("--key-file", default=None,
                        help="the logs' AES-256-GCM key file (default: $LLMFLEET_REQUEST_LOG_KEY_FILE)")
    export.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    export.add_argument("-o", "--out", required=True, help="the file to write")
    export.add_argument("--since", default=None,
                        help="only requests started at or after: an ISO date or date-time (UTC), or an age "
                             "such as 24h or 7d")
    export.add_argument("--until", default=None, help="only requests started before (same forms)")
    export.add_argument("--key-id", default=None, help="only this key's requests (its key_id)")
    export.add_argument("--team-id", default=None, help="only this team's requests")
    return parser


def _when(text: str | None, field: str, now: float) -> float | None:
    """Seconds since the epoch from an ISO date(-time) or an age ("24h": that long before `now`)."""
    if text is None:
        return None
    import datetime as dt

    from llmfleet.tenancy.keys import parse_duration

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - parse_duration(text, field)
        except ValueError:
            raise ValueError(f"{field}: an ISO date, a date-time or an age such as 24h expected, got {text!r}")
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def run(args: argparse.Namespace) -> int:
    """Export; 2 for bad flags or a key that does not open the logs."""
    import time

    from cryptography.exceptions import InvalidTag

    from llmfleet.tenancy.export import Selection, export
    from llmfleet.tenancy.request_log import load_key

    try:
        key_file = args.key_file or os.environ.get("LLMFLEET_REQUEST_LOG_KEY_FILE")
        if not key_file:
            raise ValueError("key_file: give --key-file (or $LLMFLEET_REQUEST_LOG_KEY_FILE)")
        now = time.time()
        selection = Selection(_when(args.since, "since", now), _when(args.until, "until", now), args.key_id,
                              args.team_id)
        count = export(args.log_dir, load_key(key_file), selection, args.format, args.out)
    except (ValueError, OSError) as exc:
        print(f"llmfleet logs export: error: {exc}", file=sys.stderr)
        return 2
    except InvalidTag:
        print("llmfleet logs export: error: key_file: the key does not open these logs (or a line was altered)",
              file=sys.stderr)
        return 2
    print(f"wrote {count} requests to {args.out}")
    return 0
