"""The tenancy flags `llmfleet serve` (and the gateway) share, and the TenancyConfig they give. Import-light:
argparse and os only, so a CLI can build its parser without importing the database layer."""
from __future__ import annotations

import argparse
import os


def add_tenancy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tenancy (virtual keys, limits, budgets, spend)")
    group.add_argument("--master-key", default=None,
                       help="turn tenancy on: the admin's key for /key/*, /team/*, /user/*, /spend/*; clients "
                            "use keys made by /key/generate (default: $LLMFLEET_MASTER_KEY, else off)")
    group.add_argument("--database-url", default=None,
                       help="keys and spend: sqlite:///FILE (default sqlite:///llmfleet-tenancy.db) or "
                            "postgresql://... for several gateways (default: $LLMFLEET_DATABASE_URL)")
    group.add_argument("--redis-url", default=None,
                       help="share limits, budgets and key invalidations across gateways through Redis "
                            "(default: $LLMFLEET_REDIS_URL, else in process)")
    group.add_argument("--price-file", default=None,
                       help="YAML or JSON: model -> {input, output} dollars per 1M tokens (cost and budgets)")
    group.add_argument("--pii-action", default="off", choices=["off", "log", "mask", "block"],
                       help="PII guard on prompts and answers (a key's metadata.pii_action overrides it)")
    group.add_argument("--request-log-dir", default=None,
                       help="encrypted request/response logs of keys whose metadata has log_requests: true")
    group.add_argument("--alert-webhook-url", default=None,
                       help="announce keys reaching soft_budget or max_budget here (Slack-compatible, once a day)")
    group.add_argument("--request-log-key-file", default=None,
                       help="the logs' AES-256-GCM key: 32 bytes, raw, hex or base64")
    group.add_argument("--injection-action", default="off", choices=["off", "log", "flag", "block"],
                       help="prompt-injection guard (a key's metadata.injection_action overrides it)")
    group.add_argument("--injection-threshold", type=float, default=0.5,
                       help="the injection guard acts on prompts scoring at least this (0..1, default 0.5)")
    group.add_argument("--filter-url", default=None,
                       help="external content filter: POSTed each request, answers allow / block / redact")
    group.add_argument("--filter-callable", default=None, metavar="MODULE:FUNCTION",
                       help="external content filter as a Python callable (instead of --filter-url)")
    group.add_argument("--filter-timeout", type=float, default=2.0, help="seconds the filter may take")
    group.add_argument("--filter-fail-closed", action="store_true",
                       help="refuse requests (503) when the filter fails or times out (default: let them through)")
    group.add_argument("--filter-responses", action="store_true", help="also send JSON answers to the filter")


def tenancy_config(args: argparse.Namespace):
    """The TenancyConfig the flags (or their environment variables) ask for; None when tenancy is off.
    ValueError names the bad field."""
    from llmfleet.tenancy.config import DEFAULT_DATABASE_URL, TenancyConfig

    master = args.master_key or os.environ.get("LLMFLEET_MASTER_KEY") or None
    database = args.database_url or os.environ.get("LLMFLEET_DATABASE_URL") or None
    redis = args.redis_url or os.environ.get("LLMFLEET_REDIS_URL") or None
    if master is None:
        if (args.database_url or args.redis_url or args.price_file or args.request_log_dir or args.filter_url
                or args.filter_callable or args.injection_action != "off"):
            raise ValueError("master_key: the tenancy flags (--database-url, --redis-url, ...) need --master-key")
        return None
    return TenancyConfig(master_key=master, database_url=database or DEFAULT_DATABASE_URL, redis_url=redis,
                         price_file=args.price_file, pii_action=args.pii_action,
                         request_log_dir=args.request_log_dir, request_log_key_file=args.request_log_key_file,
                         alert_webhook_url=args.alert_webhook_url, injection_action=args.injection_action,
                         injection_threshold=args.injection_threshold, filter_url=args.filter_url,
                         filter_callable=args.filter_callable, filter_timeout_s=args.filter_timeout,
                         filter_fail_open=not args.filter_fail_closed, filter_responses=args.filter_responses)
