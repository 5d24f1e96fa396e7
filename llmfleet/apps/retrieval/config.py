"""Retrieval settings: one slotted dataclass, validated on construction (flags in entrypoints fill it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from llmfleet.apps.retrieval.params import IndexParams

BACKENDS = ("faiss", "qdrant")


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    """Where vector stores live and how their text becomes vectors. Invalid values raise ValueError."""
    dir: str                                  # the catalog (SQLite) and each store's index (WAL + snapshots)
    embeddings_url: str                       # an OpenAI-compatible base URL serving /v1/embeddings
    tokenizer: str                            # the embedding model's tokenizer (folder or tokenizer.json)
    embedding_model: str | None = None        # the "model" sent to /v1/embeddings (None: the endpoint's default)
    embeddings_api_key: str | None = None
    backend: str = "faiss"                    # faiss: embedded HNSW per store; qdrant: a Qdrant collection per store
    qdrant_url: str | None = None             # with backend qdrant: a server; None: Qdrant's local mode under dir
    chunk_tokens: int = 800                   # "auto" chunking (OpenAI's defaults); the static strategy overrides
    chunk_overlap_tokens: int = 400
    max_file_bytes: int = 32 << 20
    snapshot_every_writes: int = 1000         # snapshot a store (and drop its covered logs) after this many writes
    index: IndexParams = field(default_factory=IndexParams)

    def __post_init__(self) -> None:
        for name in ("dir", "embeddings_url", "tokenizer"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"retrieval {name}: a non-empty string expected")
        if self.backend not in BACKENDS:
            raise ValueError(f"retrieval backend: one of {', '.join(BACKENDS)} expected, got {self.backend!r}")
        if self.max_file_bytes < 1 or self.snapshot_every_writes < 1:
            raise ValueError("retrieval max_file_bytes, snapshot_every_writes: must be positive")
