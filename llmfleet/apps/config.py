"""Which apps a server or gateway mounts, and their settings: import-light (no numpy), so configs may hold it."""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.apps.cache.config import CacheConfig
from llmfleet.apps.memory.config import MemoryConfig
from llmfleet.protocol.settings import reject_unknown


@dataclass(frozen=True, slots=True)
class AppsConfig:
    cache: CacheConfig | None = None    # the semantic cache on the completion routes
    memory: MemoryConfig | None = None  # /v1/conversations and `conversation` on chat requests

    @classmethod
    def from_dict(cls, data: dict) -> "AppsConfig":
        """From YAML: {cache: {...CacheConfig fields}, memory: {...MemoryConfig fields}}."""
        reject_unknown(data, ("cache", "memory"), "apps")
        cache, memory = data.get("cache"), data.get("memory")
        return cls(CacheConfig(**cache) if isinstance(cache, dict) else cache,
                   MemoryConfig(**memory) if isinstance(memory, dict) else memory)
