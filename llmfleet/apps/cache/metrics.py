"""The cache's Prometheus metrics, in a registry of its own (appended to the app's /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class CacheMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.lookups = Counter("llmfleet_semantic_cache_lookups", "Cacheable requests looked up, by result "
                               "(hit-exact, hit-semantic, miss)", ["result"], registry=r)
        self.false_hits = Counter("llmfleet_semantic_cache_false_hits", "Hits reported wrong by clients "
                                  "(DELETE /v1/cache/entries/{id}?reason=false_hit)", ["kind"], registry=r)
        self.guarded = Counter("llmfleet_semantic_cache_guard_refusals", "Semantic matches over the threshold "
                               "refused by the near-miss guard", registry=r)
        self.stored = Counter("llmfleet_semantic_cache_stores", "Answers stored", registry=r)
        self.skipped = Counter("llmfleet_semantic_cache_skipped", "Requests passed by uncached, by reason",
                               ["reason"], registry=r)
        self.lookup_seconds = Histogram("llmfleet_semantic_cache_lookup_seconds", "Index lookup time (exact and "
                                        "semantic search, guard), without the embedding call", ["kind"],
                                        buckets=_LOOKUP_BUCKETS, registry=r)
        self.embed_seconds = Histogram("llmfleet_semantic_cache_embedding_seconds", "Embedding call time",
                                       registry=r)
        self.entries = Gauge("llmfleet_semantic_cache_entries", "Entries held in this process", registry=r)
