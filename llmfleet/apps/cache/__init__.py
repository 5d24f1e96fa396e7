"""The semantic cache: exact, then embedding-similar answers per tenant (docs/semantic_cache.md)."""
