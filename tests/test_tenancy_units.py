"""Tenancy's parts without HTTP: the limiters (in process and Redis) on a given clock, budget periods and their
reset, the key cache (10,000 keys, invalidation, LRU bound), durations, reset texts, and keys kept out of logs."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from llmfleet.tenancy.cache import KeyCache
from llmfleet.tenancy.errors import reset_text
from llmfleet.tenancy.keys import key_hash, parse_duration
from llmfleet.tenancy.limits import Ask, LocalLimiter, Rejected
from llmfleet.tenancy.records import Subject


@pytest.fixture(params=["local", "redis"])
def limiter_factory(request):
    """A function returning a fresh limiter inside the running event loop."""
    if request.param == "local":
        return lambda: _Closing(LocalLimiter(), None)
    url = request.getfixturevalue("redis_url")

    def make():
        import redis.asyncio as aioredis

        from llmfleet.tenancy.redis_limits import RedisLimiter

        client = aioredis.from_url(url)
        return _Closing(RedisLimiter(client, f"test-{uuid.uuid4().hex[:8]}"), client)

    return make


class _Closing:
    def __init__(self, limiter, client):
        self.limiter, self.client = limiter, client

    async def __aenter__(self):
        return self.limiter

    async def __aexit__(self, *exc):
        if self.client is not None:
            await self.client.aclose()


def _subject(**kw) -> Subject:
    return Subject(f"key:{uuid.uuid4().hex}", **kw)


def _run(factory, scenario):
    async def main():
        async with factory() as limiter:
            await scenario(limiter)
    asyncio.run(main())


async def _refused(limiter, subjects, ask, now) -> Rejected:
    with pytest.raises(Rejected) as caught:
        await limiter.admit(subjects, ask, now)
    return caught.value


def test_rpm_window_resets_each_minute(limiter_factory):
    async def scenario(limiter):
        s = (_subject(rpm_limit=1),)
        await limiter.admit(s, Ask(1, 0.0), 600.0)
        refused = await _refused(limiter, s, Ask(1, 0.0), 630.0)
        assert refused.reason == "rpm" and refused.retry_after == pytest.approx(30.0)
        assert refused.status.rpm_remaining == 0
        await limiter.admit(s, Ask(1, 0.0), 660.0)
    _run(limiter_factory, scenario)


def test_tpm_settles_to_real_usage(limiter_factory):
    async def scenario(limiter):
        s = (_subject(tpm_limit=100),)
        ticket = await limiter.admit(s, Ask(90, 0.0), 600.0)
        assert (await _refused(limiter, s, Ask(20, 0.0), 601.0)).reason == "tpm"
        await limiter.settle(ticket, 30, 0.0)
        assert (await limiter.admit(s, Ask(70, 0.0), 602.0)).status.tpm_remaining == 0
    _run(limiter_factory, scenario)


def test_parallel_slots_come_back(limiter_factory):
    async def scenario(limiter):
        s = (_subject(max_parallel_requests=1),)
        ticket = await limiter.admit(s, Ask(1, 0.0), 600.0)
        assert (await _refused(limiter, s, Ask(1, 0.0), 600.0)).reason == "parallel"
        await limiter.settle(ticket, 1, 0.0)
        await limiter.admit(s, Ask(1, 0.0), 600.0)
    _run(limiter_factory, scenario)


def test_budget_reserves_settles_and_resets_with_its_period(limiter_factory):
    async def scenario(limiter):
        s = (_subject(max_budget=1.0, budget_duration_s=60.0),)
        ticket = await limiter.admit(s, Ask(1, 0.6), 600.0)
        assert (await _refused(limiter, s, Ask(1, 0.6), 601.0)).reason == "budget"  # reserved, not yet spent
        await limiter.settle(ticket, 1, 0.3)
        second = await limiter.admit(s, Ask(1, 0.6), 602.0)  # 0.3 spent + 0.6 reserved fits in 1.0
        refused = await _refused(limiter, s, Ask(1, 0.2), 610.0)
        assert refused.reason == "budget" and refused.retry_after == pytest.approx(50.0)
        await limiter.settle(second, 1, 0.6)
        await limiter.admit(s, Ask(1, 0.9), 660.0)  # a new period
    _run(limiter_factory, scenario)


def test_budget_starts_from_the_stored_spend_of_the_period(limiter_factory):
    async def scenario(limiter):
        s = (_subject(max_budget=1.0, budget_duration_s=60.0, period_spend=0.9, period_index=10),)
        assert (await _refused(limiter, s, Ask(1, 0.2), 600.0)).reason == "budget"
        await limiter.admit(s, Ask(1, 0.2), 660.0)
    _run(limiter_factory, scenario)


def test_team_refusal_takes_nothing_from_the_key(limiter_factory):
    async def scenario(limiter):
        key, team = _subject(rpm_limit=5), _subject(rpm_limit=0)
        refused = await _refused(limiter, (key, team), Ask(1, 0.0), 600.0)
        assert refused.subject is team and refused.status.rpm_remaining == 5
    _run(limiter_factory, scenario)


def test_key_cache_holds_ten_thousand_keys_and_invalidates():
    secret = b"s" * 32
    hashes = [key_hash(secret, f"sk-{i}") for i in range(10_000)]
    loads = []

    async def load(digest):
        loads.append(digest)
        return digest if digest in hashes[:10_000] else None

    async def main():
        cache = KeyCache(load, ttl=3600.0, max_entries=20_000)
        for digest in hashes:
            await cache.get(digest)
        for digest in hashes:
            assert await cache.get(digest) == digest
        assert len(loads) == 10_000 and len(cache) == 10_000
        cache.invalidate(hashes[7])
        await cache.get(hashes[7])
        assert loads[-1] == hashes[7] and len(loads) == 10_001
        small = KeyCache(load, ttl=3600.0, max_entries=100)
        for digest in hashes[:1000]:
            await small.get(digest)
        assert len(small) == 100

    asyncio.run(main())


def test_durations_and_reset_texts():
    assert parse_duration("30d", "d") == 30 * 86400 and parse_duration(90, "d") == 90.0
    assert parse_duration(None, "d") is None
    for bad in ("1y", "-1s", 0, "", True):
        with pytest.raises(ValueError, match="^d: "):
            parse_duration(bad, "d")
    assert [reset_text(s) for s in (0.25, 1, 59.2, 360, 3723)] == ["250ms", "1s", "1m0s", "6m0s", "1h2m3s"]


def test_raw_key_in_a_query_string_is_redacted_for_the_access_log(tmp_path):
    from llmfleet.tenancy import TenancyConfig, TenancyMiddleware

    async def main():
        middleware = TenancyMiddleware(None, TenancyConfig(master_key="m" * 16,
                                                           database_url=f"sqlite:///{tmp_path / 'k.db'}"))
        await middleware.tenancy.start()
        try:
            scope = {"type": "http", "method": "GET", "path": "/key/info", "query_string": b"key=sk-secret",
                     "headers": [(b"authorization", b"Bearer " + b"m" * 16)]}
            sent = []

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                sent.append(message)

            await middleware(scope, receive, send)
            assert sent[0]["status"] == 404 and b"sk-secret" not in scope["query_string"]
        finally:
            await middleware.tenancy.close()

    asyncio.run(main())
