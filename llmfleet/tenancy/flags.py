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


def tenancy_config(args: argparse.Namespace):
    """The TenancyConfig the flags (or their environment variables) ask for; None when tenancy is off.
    ValueError names the bad field."""
    from llmfleet.tenancy.config import DEFAULT_DATABASE_URL, TenancyConfig

    master = args.master_key or os.environ.get("LLMFLEET_MASTER_KEY") or None
    database = args.database_url or os.environ.get("LLMFLEET_DATABASE_URL") or None
    redis = args.redis_url or os.environ.get("LLMFLEET_REDIS_URL") or None
    if master is None:
        if args.database_url or args.redis_url or args.price_file or args.request_log_dir:
            raise ValueError("master_key: the tenancy flags (--database-url, --redis-url, ...) need --master-key")
        return None
    return TenancyConfig(master_key=master, database_url=database or DEFAULT_DATABASE_URL, redis_url=redis,
                         price_file=args.price_file, pii_action=args.pii_action,
                         request_log_dir=args.request_log_dir, request_log_key_file=args.request_log_key_file,
                         alert_webhook_url=args.alert_webhook_url)
