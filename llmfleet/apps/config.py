"""Which apps a server or gateway mounts, and their settings: import-light (no numpy), so configs may hold it."""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.apps.cache.config import CacheConfig
from llmfleet.apps.memory.config import MemoryConfig


@dataclass(frozen=True, slots=True)
class AppsConfig:
    cache: CacheConfig | None = None    # the semantic cache on the completion routes
    memory: MemoryConfig | None = None  # /v1/conversations and `conversation` on chat requests

    @classmethod
    def from_dict(cls, data: dict) -> "AppsConfig":
        """From YAML: {cache: {...CacheConfig fields}, memory: {...MemoryConfig fields}}."""
        unknown = sorted(set(data) - {"cache", "memory"})
        if unknown:
            raise ValueError(f"apps.{unknown[0]}: unknown setting; known: cache, memory")
        cache, memory = data.get("cache"), data.get("memory")
        return cls(CacheConfig(**cache) if isinstance(cache, dict) else cache,
                   MemoryConfig(**memory) if isinstance(memory, dict) else memory)
