"""Semantic-cache settings: one slotted dataclass validated on construction (flags: llmfleet/apps/flags.py)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.80  # cosine similarity of all-MiniLM-L6-v2 vectors, with the guard: docs/semantic_cache.md


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Invalid values raise ValueError naming the field."""
    embedding_url: str | None = None    # OpenAI-compatible server for /v1/embeddings; None: exact matching only
    embedding_model: str | None = None  # the model it embeds with (None: the server's default)
    api_key: str | None = None          # its bearer token
    threshold: float = DEFAULT_THRESHOLD  # a semantic hit needs at least this cosine similarity
    ttl_s: float = 3600.0               # an entry is served for this long after it was stored
    max_entries: int = 10_000           # entries kept in this process (least recently used out first)
    max_entry_bytes: int = 1 << 20      # larger answers are not stored
    guard: bool = True                  # refuse semantic hits whose numbers, negations, names or polar words differ
    redis_url: str | None = None        # share entries across gateways through Redis
    redis_prefix: str = "llmfleet"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold: must be in (0, 1], got {self.threshold!r}")
        if not self.ttl_s > 0:
            raise ValueError(f"ttl_s: must be > 0 seconds, got {self.ttl_s!r}")
        for name in ("max_entries", "max_entry_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.embedding_url is not None and not self.embedding_url.startswith(("http://", "https://")):
            raise ValueError(f"embedding_url: http(s):// expected, got {self.embedding_url!r}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url: redis:// or rediss:// expected, got {self.redis_url!r}")
