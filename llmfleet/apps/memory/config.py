"""Conversation-memory settings: one slotted dataclass validated on construction (flags: llmfleet/apps/flags.py)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///llmfleet-conversations.db"  # used when tenancy (and its database) is off


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Invalid values raise ValueError naming the field."""
    base_url: str                        # OpenAI-compatible server: summaries (chat) and token counts (/tokenize)
    api_key: str | None = None
    summary_model: str | None = None     # the cheap tier model that writes summaries (None: the server's default)
    embedding_url: str | None = None     # /v1/embeddings for retrieving older turns (None: base_url)
    embedding_model: str | None = None
    database_url: str | None = None      # None: the tenancy database, else DEFAULT_DATABASE_URL
    token_budget: int = 1024             # tokens of history a prompt may carry (recent turns, summary, recalled)
    recent_share: float = 0.6            # the share of the budget kept for the most recent turns, verbatim
    recalled_items: int = 3              # older items recalled by similarity to the new turn
    summary_every: int = 4               # the summary is refreshed once this many older items are not in it
    summary_max_tokens: int = 200
    timeout_s: float = 120.0             # how long a summary, token count or embedding call may take

    def __post_init__(self) -> None:
        for name in ("base_url", "embedding_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError(f"{name}: http(s):// expected, got {value!r}")
        for name in ("token_budget", "summary_every", "summary_max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.recalled_items, int) or self.recalled_items < 0:
            raise ValueError(f"recalled_items: must be an integer >= 0, got {self.recalled_items!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0 seconds, got {self.timeout_s!r}")
        if not 0.0 < self.recent_share <= 1.0:
            raise ValueError(f"recent_share: must be in (0, 1], got {self.recent_share!r}")
        if self.database_url is not None and not self.database_url.startswith(("sqlite", "postgres")):
            raise ValueError(f"database_url: sqlite:// or postgresql:// expected, got {self.database_url!r}")
