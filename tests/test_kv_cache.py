"""Block pool and KV-cache manager: exact block ids, LRU eviction order, prefix hits, accounting."""
from __future__ import annotations

import pytest

from llmfleet.engine.block_pool import BlockPool
from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.protocol.block_hash import hash_prefix
from llmfleet.engine.request import Request
from llmfleet.protocol.sampling_params import SamplingParams


def make_seq(tokens: list[int]) -> Request:
    return Request(list(tokens), SamplingParams(max_tokens=8), 0.0, len(tokens) + 8, frozenset())


def test_pool_hands_out_lowest_ids_first_and_reuses_least_recently_freed():
    pool = BlockPool(4)
    a = pool.allocate(2)
    b = pool.allocate(1)
    assert [x.block_id for x in a + b] == [0, 1, 2]
    pool.release([b[0]])
    pool.release(a[::-1])       # freed order: 2, 1, 0
    assert [x.block_id for x in pool.allocate(4)] == [3, 2, 1, 0]
    pool.check_invariants()


def test_release_below_zero_is_an_error():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.release([block])
    with pytest.raises(RuntimeError):
        pool.release([block])


def test_allocate_reports_no_room_without_changing_anything():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    seq = make_seq(list(range(13)))  # needs 4 blocks
    assert kv.allocate_slots(seq, 13) is None
    assert kv.num_free_blocks == 3 and kv.block_ids(seq) == []


def test_prefix_hit_shares_full_blocks_and_leaves_one_token_to_compute():
    kv = KVCacheManager(num_blocks=10, block_size=4)
    first = make_seq(list(range(10)))            # blocks: [0..3] [4..7] [8, 9]
    assert kv.allocate_slots(first, 10).block_ids == [0, 1, 2]
    assert kv.block_ids(first) == [0, 1, 2]
    first.num_computed_tokens = 10
    second = make_seq(list(range(8)) + [99, 98])
    hit, tokens = kv.get_computed_blocks(second)
    assert hit.block_ids == [0, 1] and tokens == 8
    assert kv.allocate_slots(second, 2, hit).block_ids == [0, 1, 3]   # the hit, then the new block
    assert kv.block_ids(second) == [0, 1, 3]
    same = make_seq(list(range(8)))               # fully cached prompt: the last block must be recomputed
    hit, tokens = kv.get_computed_blocks(same)
    assert tokens == 4
    assert kv.stats.queries == 10 + 10 and kv.stats.hits == 8


def test_freed_cached_blocks_are_evicted_lru_only_when_needed():
    kv = KVCacheManager(num_blocks=4, block_size=2)
    a, b = make_seq([1, 2, 3, 4]), make_seq([5, 6, 7, 8])
    for seq in (a, b):
        assert kv.allocate_slots(seq, 4)
        seq.num_computed_tokens = 4
    kv.free(a)   # frees tail first: blocks 1 then 0
    kv.free(b)   # then 3, 2
    assert kv.pool.num_cached_blocks == 4 and kv.num_free_blocks == 4
    c = make_seq([9, 10, 11])
    assert kv.allocate_slots(c, 3).block_ids == [1, 0]
    assert kv.block_ids(c) == [1, 0]   # least recently freed first: a's blocks evicted
    assert kv.pool.num_cached_blocks == 3   # b's two blocks, plus c's first (full) block
    hit, _ = kv.get_computed_blocks(make_seq([5, 6, 7, 8, 0]))
    assert hit.block_ids == [2, 3]
    kv.pool.check_invariants()


def test_blocks_freed_before_being_computed_are_not_served_from_the_cache():
    kv = KVCacheManager(num_blocks=4, block_size=2)
    seq = make_seq([1, 2, 3, 4])
    assert kv.allocate_slots(seq, 4)  # published at allocation, but preempted before the step ran
    kv.free(seq)
    hit, tokens = kv.get_computed_blocks(make_seq([1, 2, 3, 4, 5]))
    assert hit.block_ids == [] and tokens == 0


def test_caching_disabled_never_hits():
    kv = KVCacheManager(num_blocks=4, block_size=2, enable_caching=False)
    seq = make_seq([1, 2, 3, 4])
    assert kv.allocate_slots(seq, 4)
    seq.num_computed_tokens = 4
    kv.free(seq)
    hit, tokens = kv.get_computed_blocks(make_seq([1, 2, 3, 4, 5]))
    assert hit.block_ids == [] and tokens == 0


def test_lookahead_slots_get_blocks_but_are_never_published():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(6)))
    assert kv.allocate_slots(seq, 6, num_lookahead_tokens=3).block_ids == [0, 1, 2]   # 6 + 3 slots: 3 blocks
    assert kv.pool.num_cached_blocks == 1                 # only block 0 is full of tokens being computed
    seq.num_computed_tokens = 6
    seq.all_token_ids += [6, 7]                           # two more known tokens: block 1 is full now
    assert kv.allocate_slots(seq, 2, num_lookahead_tokens=4).block_ids == []   # 8 + 4 = 12 slots: room already
    assert kv.pool.num_cached_blocks == 2
    assert kv.allocate_slots(seq, 2, num_lookahead_tokens=5).block_ids == [3]   # 13 slots: a 4th block
    assert kv.block_ids(seq) == [0, 1, 2, 3]              # append-only
    assert kv.pool.num_cached_blocks == 2 and kv.num_free_blocks == 4
    seq.num_computed_tokens = 8
    kv.free(seq)
    assert kv.num_free_blocks == 8
    hit, tokens = kv.get_computed_blocks(make_seq(list(range(8)) + [99]))
    assert hit.block_ids == [0, 1] and tokens == 8


def test_lookahead_that_does_not_fit_changes_nothing():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    seq = make_seq([1, 2, 3])
    assert kv.allocate_slots(seq, 3, num_lookahead_tokens=6) is None   # 9 slots need 3 blocks
    assert kv.block_ids(seq) == [] and kv.num_free_blocks == 2
    assert kv.allocate_slots(seq, 3, num_lookahead_tokens=5).block_ids == [0, 1]


def test_lookahead_with_a_prefix_hit_counts_from_the_hit():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    first = make_seq(list(range(8)))
    assert kv.allocate_slots(first, 8).block_ids == [0, 1]
    first.num_computed_tokens = 8
    second = make_seq(list(range(8)) + [50, 51])
    hit, tokens = kv.get_computed_blocks(second)
    assert hit.block_ids == [0, 1] and tokens == 8
    assert kv.allocate_slots(second, 2, hit, num_lookahead_tokens=3).block_ids == [0, 1, 2, 3]  # 8 + 2 + 3 = 13
    kv.free(second)
    kv.free(first)
    assert kv.num_free_blocks == 8
    kv.pool.check_invariants()


def test_hash_prefix_is_a_chain():
    h = hash_prefix(list(range(8)), 4)
    assert len(h) == 2
    assert hash_prefix([9, 9, 9, 9] + list(range(4, 8)), 4)[1] != h[1]  # same block, other parent
    assert hash_prefix(list(range(8)), 4, salt="tenant-a") != h
