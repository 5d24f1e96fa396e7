"""Tenancy settings: one slotted dataclass, validated on construction, filled from `--master-key`,
`--database-url`, `--redis-url` and friends (or built directly by tests and the gateway)."""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "sqlite:///llmfleet-tenancy.db"
OPEN_PATHS = ("/health", "/ready")  # what orchestrators probe without credentials
PII_ACTIONS = ("off", "log", "mask", "block")  # see guards/policy.py
INJECTION_ACTIONS = ("off", "log", "flag", "block")  # see guards/injection_policy.py


@dataclass(frozen=True, slots=True)
class TenancyConfig:
    """Keys, limits, budgets and spend. Invalid values raise ValueError naming the field."""
    master_key: str                                  # the admin's bearer token; also the default HMAC secret
    database_url: str = DEFAULT_DATABASE_URL         # sqlite:///file (WAL) or postgresql://user@host/db
    redis_url: str | None = None                     # shared limits, budgets and cache invalidation across gateways
    key_secret: str | None = None                    # HMAC secret of stored key hashes (default: the master key)
    prices: dict = field(default_factory=dict)       # model -> {"input": $/1M tokens, "output": $/1M tokens}
    price_file: str | None = None                    # YAML or JSON of the same shape, merged under `prices`
    default_max_tokens: int = 4096                   # completion tokens assumed at admission when none are asked
    cache_ttl_s: float = 10.0                        # how long a cached key stays valid without an invalidation
    cache_max_keys: int = 100_000                    # the key cache is an LRU of at most this many entries
    spend_flush_interval_s: float = 1.0              # spend rows are written in batches at least this often
    spend_batch_size: int = 500                      # ... or as soon as this many are waiting
    open_paths: tuple[str, ...] = OPEN_PATHS         # served without any key
    redis_prefix: str = "llmfleet"                   # namespace of every Redis key and channel
    pii_action: str = "off"                          # PII guard on prompts and answers; a key's metadata.pii_action wins
    request_log_dir: str | None = None               # encrypted request/response logs of keys with metadata.log_requests
    request_log_key_file: str | None = None          # their AES-256-GCM key (32 bytes: raw, hex or base64)
    alert_webhook_url: str | None = None             # soft_budget / max_budget reached: Slack-compatible JSON, daily
    injection_action: str = "off"                    # prompt-injection guard; a key's metadata.injection_action wins
    injection_threshold: float = 0.5                 # the guard acts on prompts scoring at least this (0..1)
    filter_url: str | None = None                    # external content filter over HTTP (hooks.py) ...
    filter_callable: str | None = None               # ... or a Python callable "package.module:function"
    filter_timeout_s: float = 2.0                    # how long the filter may take
    filter_fail_open: bool = True                    # a failed filter lets requests through (False: 503)
    filter_responses: bool = False                   # also send JSON answers to the filter

    def __post_init__(self) -> None:
        if not isinstance(self.master_key, str) or len(self.master_key) < 8:
            raise ValueError("master_key: must be a string of at least 8 characters")
        if self.key_secret is not None and len(self.key_secret) < 16:
            raise ValueError("key_secret: must be at least 16 characters")
        if not self.database_url.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError(f"database_url: sqlite:// or postgresql:// expected, got {self.database_url!r}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url: redis:// or rediss:// expected, got {self.redis_url!r}")
        for name in ("default_max_tokens", "cache_max_keys", "spend_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("cache_ttl_s", "spend_flush_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {getattr(self, name)!r}")
        if self.pii_action not in PII_ACTIONS:
            raise ValueError(f"pii_action: one of {', '.join(PII_ACTIONS)} expected, got {self.pii_action!r}")
        if (self.request_log_dir is None) != (self.request_log_key_file is None):
            raise ValueError("request_log_dir: request logs need both a folder and request_log_key_file")
        if self.alert_webhook_url is not None and not self.alert_webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"alert_webhook_url: http(s):// expected, got {self.alert_webhook_url!r}")
        if self.injection_action not in INJECTION_ACTIONS:
            raise ValueError(f"injection_action: one of {', '.join(INJECTION_ACTIONS)} expected, "
                             f"got {self.injection_action!r}")
        if not 0.0 < self.injection_threshold <= 1.0:
            raise ValueError(f"injection_threshold: must be in (0, 1], got {self.injection_threshold!r}")
        if self.filter_url is not None and self.filter_callable is not None:
            raise ValueError("filter_url: give a filter URL or a filter callable, not both")
        if self.filter_url is not None and not self.filter_url.startswith(("http://", "https://")):
            raise ValueError(f"filter_url: http(s):// expected, got {self.filter_url!r}")
        if self.filter_callable is not None and ":" not in self.filter_callable:
            raise ValueError(f"filter_callable: 'module:function' expected, got {self.filter_callable!r}")
        if not self.filter_timeout_s > 0:
            raise ValueError(f"filter_timeout_s: must be > 0 seconds, got {self.filter_timeout_s!r}")
        if not isinstance(self.prices, dict):
            raise ValueError("prices: must be a mapping of model name to {input, output}")

    @property
    def hmac_secret(self) -> bytes:
        return (self.key_secret or self.master_key).encode()
