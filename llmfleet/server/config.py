"""Server settings: one slotted dataclass, validated on construction, filled from `llmfleet serve` flags.

The engine's own settings stay in EngineConfig; this object holds only what the HTTP layer decides.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llmfleet.console.config import ConsoleConfig
from llmfleet.apps.config import AppsConfig
from llmfleet.apps.retrieval.config import RetrievalConfig
from llmfleet.protocol.tls import TLSConfig
from llmfleet.tenancy.config import TenancyConfig

TOOL_CALL_PARSERS = ("hermes", "qwen", "llama3_json", "mistral")   # server/chat/tool_parsers.py's PARSERS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the HTTP layer decides (the engine's settings are EngineConfig's). Invalid values raise ValueError."""
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_names: tuple[str, ...] = ()  # (): the engine's model name; the first is the primary name
    max_waiting_requests: int = 1024          # admitted sequences (prompts x n) without a token yet; above: 429
    max_body_bytes: int = 8 << 20             # request bodies above this get 413 (a 32k-token id prompt is ~200 KB)
    drain_timeout: float = 30.0               # seconds in-flight requests get after SIGTERM before being aborted
    api_key: str | None = None                # when set, all but /health and /ready need `Authorization: Bearer`
    metrics_public: bool = False              # with api_key: /metrics open to scrapers without the key
    retry_after_s: int = 1                    # Retry-After header of 429 and 503 answers
    log_level: str = "info"
    tool_call_parser: str | None = None       # hermes | qwen | llama3_json | mistral: reads tool_choice "auto" calls
    tenancy: TenancyConfig | None = None      # keys, limits, budgets and spend (replaces api_key): `--master-key`
    batch_dir: str | None = None              # /v1/files + /v1/batches state (survives restarts); None: a
    #                                           temporary folder removed at exit
    batch_concurrency: int = 32               # requests of one batch in flight at once
    max_stored_responses: int = 1024          # /v1/responses kept for previous_response_id (least recent dropped)
    lenient_requests: bool = False            # unknown request fields are ignored (debug log) instead of a 400
    allowed_origins: tuple[str, ...] = ()     # CORS: origins browsers may call from ("*": any); (): no CORS
    allowed_methods: tuple[str, ...] = ("*",)  # CORS: methods a cross-origin request may use
    allowed_headers: tuple[str, ...] = ("*",)  # CORS: headers it may send
    allow_credentials: bool = False           # CORS: cookies and Authorization from those origins
    tls: TLSConfig | None = None              # HTTPS (and mTLS): `--ssl-certfile`, `--ssl-keyfile`, ...
    preemption_notice_url: str | None = None  # spot instances: poll this metadata URL; a notice drains the replica
    preemption_poll_s: float = 5.0            # how often
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # /console for this replica alone
    apps: AppsConfig | None = None            # semantic cache, conversations: `--semantic-cache`, `--conversations`
    retrieval: RetrievalConfig | None = None  # /v1/vector_stores: `--retrieval-dir` and the other --retrieval-*
    retrieval_own_model: bool = False         # retrieval embeds with this replica's model (chunks fit its context)
    lora_modules: tuple[tuple[str, str], ...] = ()  # (name, PEFT folder) adapters served from the start

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in [0, 65535], got {self.port}")
        for name in ("max_waiting_requests", "max_body_bytes", "retry_after_s", "batch_concurrency",
                     "max_stored_responses"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.preemption_notice_url is not None and not self.preemption_notice_url.startswith(
                ("http://", "https://")):
            raise ValueError(f"preemption_notice_url: must be an http(s) URL, got {self.preemption_notice_url!r}")
        if not self.preemption_poll_s > 0:
            raise ValueError(f"preemption_poll_s: must be > 0 seconds, got {self.preemption_poll_s!r}")
        if not self.drain_timeout >= 0:
            raise ValueError(f"drain_timeout: must be >= 0 seconds, got {self.drain_timeout!r}")
        if any(not name for name in self.served_model_names):
            raise ValueError("served_model_names: names must be non-empty strings")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key: must be a non-empty string or None")
        if self.tenancy is not None and self.api_key is not None:
            raise ValueError("api_key: give either an API key or tenancy's master key, not both")
        for name in ("allowed_origins", "allowed_methods", "allowed_headers"):
            if any(not isinstance(v, str) or not v for v in getattr(self, name)):
                raise ValueError(f"{name}: must be non-empty strings")
        if self.tool_call_parser is not None and self.tool_call_parser not in TOOL_CALL_PARSERS:
            raise ValueError(f"tool_call_parser: must be one of {', '.join(TOOL_CALL_PARSERS)}, got "
                             f"{self.tool_call_parser!r}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError(f"log_level: unknown value {self.log_level!r}")
