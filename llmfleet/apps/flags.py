"""The apps' flags `llmfleet serve` and `llmfleet gateway` share, and the AppsConfig they give. Import-light:
argparse only, so a CLI builds its parser without numpy or the database layer."""
from __future__ import annotations

import argparse


def add_apps_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("apps (semantic cache, conversation memory)")
    group.add_argument("--semantic-cache", action="store_true",
                       help="cache answers of temperature-0 requests (or those sending \"cache\": true) per tenant")
    group.add_argument("--cache-embedding-url", default=None,
                       help="OpenAI-compatible server whose /v1/embeddings the cache embeds prompts with "
                            "(default: exact matching only)")
    group.add_argument("--cache-embedding-model", default=None, help="the embedding model's name there")
    group.add_argument("--cache-threshold", type=float, default=None,
                       help="cosine similarity a semantic hit needs (default 0.80)")
    group.add_argument("--cache-ttl", type=float, default=None, help="seconds an answer is served (default 3600)")
    group.add_argument("--cache-max-entries", type=int, default=None, help="entries kept (default 10000)")
    group.add_argument("--cache-no-guard", action="store_true",
                       help="serve semantic matches even when their numbers, negations or names differ")
    group.add_argument("--cache-redis-url", default=None, help="share the cache across gateways through Redis")
    group.add_argument("--conversations", action="store_true",
                       help="serve /v1/conversations and `conversation` on chat requests")
    group.add_argument("--memory-base-url", default=None,
                       help="OpenAI-compatible server for conversation summaries and token counts")
    group.add_argument("--memory-summary-model", default=None, help="the cheap model that writes summaries")
    group.add_argument("--memory-embedding-url", default=None,
                       help="/v1/embeddings server for recalling older turns (default: --memory-base-url)")
    group.add_argument("--memory-embedding-model", default=None, help="the embedding model's name there")
    group.add_argument("--memory-token-budget", type=int, default=None,
                       help="tokens of history a conversation's prompt carries (default 1024)")
    group.add_argument("--memory-summary-max-tokens", type=int, default=None,
                       help="tokens a summary may take (default 200)")
    group.add_argument("--memory-timeout", type=float, default=None,
                       help="seconds a summary, token count or embedding call may take (default 120)")
    group.add_argument("--apps-api-key", default=None, help="bearer token for the apps' model servers")


def apps_config(args: argparse.Namespace):
    """The AppsConfig the flags ask for; None when no app is on. ValueError names the bad field."""
    from llmfleet.apps.cache.config import CacheConfig
    from llmfleet.apps.config import AppsConfig
    from llmfleet.apps.memory.config import MemoryConfig

    cache = memory = None
    if args.semantic_cache:
        settings = {"threshold": args.cache_threshold, "ttl_s": args.cache_ttl, "max_entries": args.cache_max_entries,
                    "redis_url": args.cache_redis_url}
        cache = CacheConfig(embedding_url=args.cache_embedding_url, embedding_model=args.cache_embedding_model,
                            api_key=args.apps_api_key, guard=not args.cache_no_guard,
                            **{k: v for k, v in settings.items() if v is not None})
    if args.conversations:
        if not args.memory_base_url:
            raise ValueError("memory_base_url: --conversations needs --memory-base-url (summaries, token counts)")
        sizes = {"token_budget": args.memory_token_budget, "summary_max_tokens": args.memory_summary_max_tokens,
                 "timeout_s": args.memory_timeout}
        budget = {k: v for k, v in sizes.items() if v is not None}
        memory = MemoryConfig(base_url=args.memory_base_url, api_key=args.apps_api_key,
                              summary_model=args.memory_summary_model, embedding_url=args.memory_embedding_url,
                              embedding_model=args.memory_embedding_model, **budget)
    return AppsConfig(cache, memory) if cache or memory else None
