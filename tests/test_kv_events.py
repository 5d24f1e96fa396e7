"""KV events end to end inside one process: the block pool's hooks, the publisher's batches and replay buffer, and
the gateway's subscriber catching up after a gap; the index then holds exactly the pool's cached hashes."""
from __future__ import annotations

import asyncio

import pytest
import zmq.asyncio

from llmfleet.engine.block_pool import BlockPool
from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.kv_events import KVEventPublisher, KVEventRecorder
from llmfleet.engine.request import Request
from llmfleet.gateway.index import PrefixIndex
from llmfleet.gateway.kv_subscriber import KVEventSubscriber
from llmfleet.protocol import kv_events as msg
from llmfleet.protocol.block_hash import hash_prefix
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.sampling_params import SamplingParams

try:
    from fleet_procs import free_port
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import free_port


def test_recorder_coalesces_chains_and_a_reset_subsumes_everything():
    rec = KVEventRecorder(block_size=4)
    rec.stored(b"a", None)
    rec.stored(b"b", b"a")
    rec.stored(b"x", None)
    rec.removed(b"a")
    rec.removed(b"b")
    assert rec.take() == [msg.BlockStored([b"a", b"b"], None, 8), msg.BlockStored([b"x"], None, 4),
                          msg.BlockRemoved([b"a", b"b"])]
    rec.stored(b"c", None)
    rec.cleared()
    assert rec.take() == [msg.AllBlocksCleared()] and rec.take() == []


def test_pool_hooks_report_cache_and_eviction_in_order():
    pool = BlockPool(2)
    pool.events = rec = KVEventRecorder(block_size=16)
    first, second = pool.allocate(2)
    pool.cache(first, b"h1")
    pool.cache(second, b"h1")            # a duplicate hash: not cached again, no event
    pool.cache(second, b"h2", b"h1")
    pool.release([first, second])
    pool.allocate(1)                      # hands out `first`: its hash is evicted
    pool.uncache(second)
    assert rec.take() == [msg.BlockStored([b"h1", b"h2"], None, 32), msg.BlockRemoved([b"h1", b"h2"])]


def test_messages_round_trip_and_bad_endpoints_name_the_field():
    batch = msg.KVEventBatch(3, 1.5, [msg.BlockStored([b"a"], None, 16), msg.AllBlocksCleared()], 16)
    assert msg.decode_batch(msg.encode(batch)) == batch
    assert msg.replay_endpoint("tcp://127.0.0.1:5557") == "tcp://127.0.0.1:5558"
    with pytest.raises(ValueError, match="kv_events_endpoint"):
        EngineConfig(model="x", kv_events_endpoint="http://nope")


def _run_workload(kv: KVCacheManager, publisher: KVEventPublisher, prompts: list[list[int]]) -> None:
    """Admit and finish each prompt (each one a step), as the scheduler would."""
    for i, ids in enumerate(prompts):
        seq = Request(ids, SamplingParams(max_tokens=1), 0.0, len(ids) + 1, frozenset(), 0, f"r{i}")
        hit, num_hit = kv.get_computed_blocks(seq)
        assert kv.allocate_slots(seq, len(ids) - num_hit, hit) is not None
        seq.num_computed_tokens = len(ids)
        kv.free(seq)
        publisher.publish_pending()


def test_subscriber_replays_a_gap_and_its_index_equals_the_pool():
    port = free_port()
    kv = KVCacheManager(num_blocks=12, block_size=4)
    publisher = KVEventPublisher(f"tcp://127.0.0.1:{port}", 4).attach(kv.pool)
    prompts = [[t % 50 + i for t in range(4 * (2 + i % 3))] for i in range(10)]   # evictions included

    async def scenario():
        ctx = zmq.asyncio.Context()
        index = PrefixIndex()
        sub = KVEventSubscriber("r", publisher.endpoint, index, ctx)
        _run_workload(kv, publisher, prompts[:3])        # before the subscriber exists: caught up by replay
        task = asyncio.create_task(sub.run())
        await asyncio.wait_for(sub.synced.wait(), 5)
        _run_workload(kv, publisher, prompts[3:6])
        await _settle(sub, 6)
        replays = sub.replays
        index.clear("r")                                   # pretend every batch so far was lost:
        sub.next_seq, sub.last_timestamp = 0, 0.0          # the next live batch (6) shows the gap
        _run_workload(kv, publisher, prompts[6:])
        await _settle(sub, 10)
        task.cancel()
        ctx.destroy(linger=0)
        return index, sub, replays

    try:
        index, sub, replays = asyncio.run(scenario())
    finally:
        publisher.close()
    assert sub.replays > replays
    assert index.cached_hashes("r") == set(kv.pool._cached)
    last = prompts[-1]
    held = index.match(hash_prefix(last, 4), ["r"])["r"]
    assert held == len(last) // 4


async def _settle(sub: KVEventSubscriber, next_seq: int) -> None:
    for _ in range(500):
        if sub.next_seq >= next_seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"subscriber at {sub.next_seq}, expected {next_seq}")
