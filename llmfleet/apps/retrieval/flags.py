"""`--retrieval-*` flags shared by `llmfleet serve` and `llmfleet gateway` (import-light: no numpy or faiss)."""
from __future__ import annotations

import argparse


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("retrieval (/v1/vector_stores)")
    group.add_argument("--retrieval-dir", default=None,
                       help="serve /v1/vector_stores, keeping the catalog and the indexes in this folder")
    group.add_argument("--retrieval-embeddings-url", default=None,
                       help="an OpenAI-compatible base URL serving /v1/embeddings (default: this process itself)")
    group.add_argument("--retrieval-embedding-model", default=None, help="the model named in embedding requests")
    group.add_argument("--retrieval-embeddings-api-key", default=None,
                       help="key for the embeddings URL (default: this process's master or API key)")
    group.add_argument("--retrieval-tokenizer", default=None,
                       help="the embedding model's tokenizer (folder or tokenizer.json) that chunks are counted in "
                            "(default: the served model's)")
    group.add_argument("--retrieval-backend", default="faiss", choices=["faiss", "qdrant"],
                       help="faiss: an embedded HNSW index per store; qdrant: a Qdrant collection per store")
    group.add_argument("--retrieval-qdrant-url", default=None,
                       help="with --retrieval-backend qdrant: the server (default: Qdrant's local mode on disk)")
    group.add_argument("--retrieval-chunk-tokens", type=int, default=None,
                       help="tokens per chunk of the auto chunking strategy (default 800, or less when the "
                            "embedding model's context is shorter)")


def retrieval_config(args: argparse.Namespace, own_url: str, tokenizer: str | None, api_key: str | None,
                     context_tokens: int | None = None):
    """RetrievalConfig from the flags (None without --retrieval-dir); ValueError names the bad field."""
    if not getattr(args, "retrieval_dir", None):
        return None
    from llmfleet.apps.retrieval.config import RetrievalConfig

    chunk = args.retrieval_chunk_tokens or (min(800, context_tokens - 16) if context_tokens else 800)
    tokenizer = args.retrieval_tokenizer or tokenizer
    if not tokenizer:
        raise ValueError("retrieval tokenizer: give --retrieval-tokenizer (the embedding model's folder)")
    return RetrievalConfig(dir=args.retrieval_dir, embeddings_url=args.retrieval_embeddings_url or own_url,
                           tokenizer=tokenizer, embedding_model=args.retrieval_embedding_model,
                           embeddings_api_key=args.retrieval_embeddings_api_key or api_key,
                           backend=args.retrieval_backend, qdrant_url=args.retrieval_qdrant_url,
                           chunk_tokens=chunk, chunk_overlap_tokens=min(400, chunk // 2))
