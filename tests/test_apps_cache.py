"""The semantic cache: its keys, the near-miss guard, the bounded store, tenants kept apart (property-based), the
paraphrase set's near misses staying misses with real all-MiniLM-L6-v2 embeddings, and the middleware behind real
tenancy (hit headers, streams replayed, opt-out, false-hit reports, metrics), on the gateway, and shared through
a real Redis."""
from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.apps.cache.cache import SemanticCache
from llmfleet.apps.cache.config import CacheConfig
from llmfleet.apps.cache.guard import signature
from llmfleet.apps.cache.keys import cache_keys, cacheable
from llmfleet.apps.cache.middleware import CacheMiddleware
from llmfleet.apps.cache.paraphrases import DATA, pairs
from llmfleet.apps.cache.store import Entry, MemoryStore
from llmfleet.apps.endpoint import Endpoint
from llmfleet.server.background import BackgroundServer
from llmfleet.tenancy import TenancyMiddleware

try:
    from apps_helpers import EchoApp, embedding_server
    from tenancy_app import MASTER, tenancy_config
except ImportError:  # tests/ imported as a package
    from tests.apps_helpers import EchoApp, embedding_server
    from tests.tenancy_app import MASTER, tenancy_config

CHAT = "/v1/chat/completions"


def _chat(text: str, system: str | None = None, **fields) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return {"model": "m", "messages": messages, "temperature": 0, **fields}


def test_keys_normalize_whitespace_and_separate_what_changes_the_answer():
    base = cache_keys(CHAT, _chat("What is  the capital of\nFrance?"))
    assert base.exact == cache_keys(CHAT, _chat(" What is the capital of France? ")).exact
    assert base.exact != cache_keys(CHAT, _chat("What is the capital of France?", max_tokens=5)).exact
    assert base.exact == cache_keys(CHAT, _chat("What is the capital of France?", stream=True, user="u")).exact
    assert base.text == "What is the capital of France?"
    assert base.namespace == cache_keys(CHAT, _chat("Another question")).namespace
    assert base.namespace != cache_keys(CHAT, _chat("What is the capital of France?", system="Be terse")).namespace
    assert cache_keys(CHAT, {"messages": [{"role": "assistant", "content": "hi"}]}).namespace is None
    assert cache_keys("/v1/completions", {"prompt": [1, 2, 3]}) is None


def test_cacheable_by_default_at_temperature_zero_and_by_request():
    assert cacheable({"temperature": 0}, None) and not cacheable({"temperature": 0.7}, None)
    assert not cacheable({}, None) and not cacheable({"temperature": 0, "n": 2}, None)
    assert cacheable({"temperature": 0.7, "cache": True}, None) and not cacheable({"temperature": 0, "cache": False},
                                                                                  None)
    assert not cacheable({"temperature": 0}, "no-store")


@pytest.mark.parametrize("a, b", [
    ("Convert 5 miles to kilometers.", "Convert 7 miles to kilometers."),
    ("Is tofu vegan?", "Is tofu not vegan?"),
    ("How do I get from Paris to Rome by train?", "How do I get from Rome to Paris by train?"),
    ("Is Japan bigger than France?", "Is Japan smaller than France?"),
    ("Plan a three-day trip to Oslo.", "Plan a four-day trip to Oslo."),
    ("Who wrote Hamlet?", "Who wrote Dracula?")])
def test_the_guard_tells_near_misses_apart(a, b):
    assert not signature(a).agrees(signature(b))


@pytest.mark.parametrize("a, b", [
    ("What is the capital of France?", "Tell me the capital city of France."),
    ("Convert 5 miles to kilometers.", "How many kilometers are 5 miles?"),
    ("How do I get from Paris to Rome by train?", "Which trains go from Paris to Rome?")])
def test_the_guard_lets_paraphrases_through(a, b):
    assert signature(a).agrees(signature(b))


def _entry(store: MemoryStore, tenant: str, key: str, vector=None, ttl: float = 60.0, now: float = 0.0) -> Entry:
    return Entry(store.new_id(), tenant, key, b"{}", now + ttl, "ns" if vector is not None else None,
                 signature(key), vector)


def test_the_store_expires_and_evicts_the_least_recently_used():
    store = MemoryStore(max_entries=2)
    v = np.ones(4, np.float32) / 2
    a, b, c = (_entry(store, "t", k, v) for k in ("a", "b", "c"))
    store.put(a)
    store.put(b)
    assert store.exact("t", "a", now=1.0) is a  # a is now the most recently used
    store.put(c)
    assert store.exact("t", "b", 1.0) is None and store.exact("t", "a", 1.0) is a and len(store) == 2
    assert [e for _, e in store.similar("t", "ns", v, 0.9, 1.0)] and store.exact("t", "c", now=61.0) is None
    assert len(store) == 1 and [e.entry_id for _, e in store.similar("t", "ns", v, 0.9, 1.0)] == [a.entry_id]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["team:a", "team:b", "key:c", "admin", ""]),
                          st.text(min_size=1, max_size=20)), min_size=1, max_size=30),
       st.sampled_from(["team:a", "team:b", "key:c", "admin", ""]))
def test_a_tenant_never_reads_another_tenants_entries(stored, reader):
    """Every entry has the same vector, so only the tenant can keep a reader from it."""
    store = MemoryStore(max_entries=1000)
    vector = np.full(8, 1 / np.sqrt(8), np.float32)
    for tenant, text in stored:
        store.put(_entry(store, tenant, text, vector))
    for tenant, text in stored:
        found = store.exact(reader, text, 1.0)
        assert found is None or found.tenant == reader
    assert all(e.tenant == reader for _, e in store.similar(reader, "ns", vector, 0.5, 1.0))
    assert all(store.get(reader, e.entry_id) is None for e in list(store._entries.values()) if e.tenant != reader)


def test_the_paraphrase_set_is_built_deterministically():
    rows = pairs()
    assert rows == pairs() and sum(r["kind"] == "paraphrase" for r in rows) >= 500
    assert {r["change"] for r in rows} == {None, "number", "entity", "swap", "negation", "opposite"}
    with open(DATA, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == rows


@pytest.fixture(scope="module")
def minilm():
    proc = embedding_server()
    try:
        yield proc.wait_ready(300).url
    finally:
        proc.kill()


def test_near_misses_stay_misses_with_real_embeddings(minilm):
    """The test split of the set: every near-miss query misses when its anchor (and every other anchor) is
    cached; paraphrases mostly hit."""
    rows = [r for r in pairs() if r["split"] == "test"]

    async def run() -> tuple[int, int, int]:
        endpoint = Endpoint(minilm)
        texts = sorted({r["anchor"] for r in rows} | {r["query"] for r in rows})
        vectors = {}
        for i in range(0, len(texts), 64):
            vectors.update(zip(texts[i:i + 64], await endpoint.embed("minilm", texts[i:i + 64])))
        await endpoint.close()
        cache = SemanticCache(CacheConfig(max_entries=10_000))
        meaning = {}
        for row in rows:
            keys = cache_keys(CHAT, _chat(row["anchor"]))
            entry = await cache.put("t", keys, b"{}", vectors[row["anchor"]])
            meaning[entry.entry_id] = row["anchor_meaning"]
        wrong = hits = 0
        for row in rows:
            found = await cache.nearest("t", cache_keys(CHAT, _chat(row["query"])), vectors[row["query"]], 0.0)
            if found.entry is not None and meaning[found.entry.entry_id] != row["query_meaning"]:
                wrong += 1
            hits += found.entry is not None and row["kind"] == "paraphrase"
        return wrong, hits, sum(r["kind"] == "paraphrase" for r in rows)

    wrong, hits, paraphrases = asyncio.run(run())
    assert wrong <= paraphrases // 100  # at most 1% of the near misses (half the lookups) served a wrong answer
    assert hits >= paraphrases // 2


@pytest.fixture(scope="module")
def tenants(minilm, tmp_path_factory):
    """EchoApp behind the cache behind real tenancy; two keys of two teams."""
    db = tmp_path_factory.mktemp("cache-tenancy") / "keys.db"
    upstream = EchoApp()
    cache = CacheMiddleware(upstream, CacheConfig(embedding_url=minilm, embedding_model="minilm"))
    with BackgroundServer(TenancyMiddleware(cache, tenancy_config(f"sqlite:///{db}"))) as url:
        admin = {"authorization": f"Bearer {MASTER}"}
        keys = []
        for team in ("red", "blue"):
            assert httpx.post(url + "/team/new", json={"team_id": team}, headers=admin).status_code == 200
            keys.append(httpx.post(url + "/key/generate", json={"team_id": team}, headers=admin).json()["key"])
        yield url, keys, upstream


def _ask(url: str, key: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, headers={"authorization": f"Bearer {key}", **headers}, timeout=60)


def test_hits_are_per_tenant_and_say_so(tenants):
    url, (red, blue), upstream = tenants
    calls = upstream.calls
    first = _ask(url, red, _chat("What is the capital of Kenya?"))
    assert first.headers["x-llmfleet-cache"] == "miss" and upstream.calls == calls + 1
    again = _ask(url, red, _chat("What is the capital of  Kenya?"))
    assert again.headers["x-llmfleet-cache"] == "hit-exact" and upstream.calls == calls + 1
    assert again.json()["choices"] == first.json()["choices"] and again.json()["usage"]["total_tokens"] == 0
    similar = _ask(url, red, _chat("Tell me the capital city of Kenya."))
    assert similar.headers["x-llmfleet-cache"] == "hit-semantic", similar.headers
    assert float(similar.headers["x-llmfleet-cache-similarity"]) >= 0.9
    assert _ask(url, red, _chat("What is the capital of Kenya? Is it not Nairobi?")).headers[
        "x-llmfleet-cache"] == "miss"
    assert _ask(url, blue, _chat("What is the capital of Kenya?")).headers["x-llmfleet-cache"] == "miss"
    assert upstream.calls == calls + 3
    deleted = httpx.delete(url + f"/v1/cache/entries/{similar.headers['x-llmfleet-cache-id']}",
                           headers={"authorization": f"Bearer {blue}"})
    assert deleted.status_code == 404  # another tenant's entry is not there for blue


def test_streams_opt_outs_and_false_hit_reports(tenants):
    url, (red, _), upstream = tenants
    body = _chat("Name the longest river in Peru.", stream=True)
    streamed = _ask(url, red, body)
    assert streamed.headers["x-llmfleet-cache"] == "miss" and "longest river in Peru" in streamed.text
    replay = _ask(url, red, body)
    assert replay.headers["x-llmfleet-cache"] == "hit-exact" and replay.text.endswith("data: [DONE]\n\n")
    deltas = [json.loads(line[6:]) for line in replay.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in deltas if c["choices"]) == \
        "echo: Name the longest river in Peru."
    hit = _ask(url, red, {**body, "stream": False})
    assert hit.headers["x-llmfleet-cache"] == "hit-exact"
    # reported before the no-cache refresh below, which stores a fresh entry (a new id) in its place
    auth = {"authorization": f"Bearer {red}"}
    entry = hit.headers["x-llmfleet-cache-id"]
    answer = httpx.delete(url + f"/v1/cache/entries/{entry}?reason=false_hit", headers=auth)
    assert answer.json().get("deleted"), answer.text
    calls = upstream.calls
    off = _ask(url, red, _chat("Name the longest river in Peru.", cache=False))
    assert "x-llmfleet-cache" not in off.headers and upstream.calls == calls + 1 and "cache" not in upstream.bodies[-1]
    assert _ask(url, red, _chat("Name the longest river in Peru."), **{"cache-control": "no-cache"}).headers[
        "x-llmfleet-cache"] == "miss"
    metrics = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
    assert "upstream_metric 1" in metrics
    assert 'llmfleet_semantic_cache_false_hits_total{kind="semantic"} 1.0' in metrics
    assert 'llmfleet_semantic_cache_lookups_total{result="hit-exact"}' in metrics


def test_two_gateways_share_entries_through_redis(minilm, redis_url):
    upstreams = [EchoApp(), EchoApp()]
    config = CacheConfig(embedding_url=minilm, embedding_model="minilm", redis_url=redis_url,
                         redis_prefix="cache-test")
    with BackgroundServer(CacheMiddleware(upstreams[0], config)) as one, \
            BackgroundServer(CacheMiddleware(upstreams[1], config)) as two:
        first = httpx.post(one + CHAT, json=_chat("Who wrote Middlemarch?"), timeout=60)
        assert first.headers["x-llmfleet-cache"] == "miss"
        exact = httpx.post(two + CHAT, json=_chat("Who wrote Middlemarch?"), timeout=60)
        assert exact.headers["x-llmfleet-cache"] == "hit-exact" and exact.json() == {
            **first.json(), "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
        similar = httpx.post(two + CHAT, json=_chat("Who is the author of Middlemarch?"), timeout=60)
        assert similar.headers["x-llmfleet-cache"] == "hit-semantic" and upstreams[1].calls == 0
    with BackgroundServer(CacheMiddleware(EchoApp(), config)) as later:  # loads the vectors at start
        assert httpx.post(later + CHAT, json=_chat("Which writer wrote Middlemarch?"), timeout=60).headers[
            "x-llmfleet-cache"] == "hit-semantic"


def test_the_gateway_mounts_the_cache():
    """`apps` on GatewayConfig: exact matching in front of the proxy (a fixed-answer backend counts requests)."""
    from llmfleet.apps.config import AppsConfig

    try:
        from fleet_procs import fixed_backend, gateway
    except ImportError:
        from tests.fleet_procs import fixed_backend, gateway
    backend = fixed_backend(model="fixed").start()
    try:
        backend.wait_ready(120)
        with gateway([backend.url], apps=AppsConfig(cache=CacheConfig())) as (url, fleet):
            body = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
            first = httpx.post(url + CHAT, json=body, timeout=30)
            second = httpx.post(url + CHAT, json=body, timeout=30)
            assert first.headers["x-llmfleet-cache"] == "miss" and second.headers["x-llmfleet-cache"] == "hit-exact"
            assert second.json()["choices"] == first.json()["choices"]
            assert sum(r.routed for r in fleet.replicas) == 1
            assert "llmfleet_semantic_cache_stores_total 1.0" in httpx.get(url + "/metrics").text
    finally:
        backend.kill()
