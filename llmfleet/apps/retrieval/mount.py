"""Mounting the vector store API on an ASGI app (the replica server or the gateway)."""
from __future__ import annotations

from starlette.middleware import Middleware

from llmfleet.apps.retrieval.chat import RetrievalChatMiddleware
from llmfleet.apps.retrieval.chunking import ChunkingStrategy
from llmfleet.apps.retrieval.config import RetrievalConfig
from llmfleet.apps.retrieval.http import routes
from llmfleet.apps.retrieval.service import FileSource, RetrievalService


def mount_retrieval(app, config: RetrievalConfig, file_source: FileSource | None = None) -> RetrievalService:
    """Add /v1/vector_stores to `app` (Starlette or FastAPI), and file search to its chat completions as the
    innermost middleware (behind tenancy, which names the caller); the caller closes the service at shutdown."""
    service = RetrievalService(config, file_source)
    app.router.routes.extend(routes(service))
    app.user_middleware.append(Middleware(RetrievalChatMiddleware, service=service))
    return service


def limit_chunks(service: RetrievalService, context_tokens: int) -> None:
    """Shrink the auto chunking strategy to fit an embedding model of `context_tokens` (special tokens aside)."""
    size = min(service.default_chunking.max_chunk_size_tokens, context_tokens - 16)
    if size < service.default_chunking.max_chunk_size_tokens and size >= 100:
        service.default_chunking = ChunkingStrategy(size, min(service.default_chunking.chunk_overlap_tokens,
                                                              size // 2))
