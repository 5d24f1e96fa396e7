"""Draft tokens in the scheduler and KV manager: scheduled as extra tokens of a decode within the budget and the
length limit, lookahead slots reserved, accepted drafts computed, rejected slots reused, unverified tokens never
published to the prefix cache; exact block accounting under random interleavings (property-based)."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.request import Request, Status
from llmfleet.engine.scheduler import Scheduler
from llmfleet.protocol.sampling_params import SamplingParams
from tests.test_scheduler import check_accounting, make_seq


def step(sched: Scheduler, accept: dict[int, int] | None = None, token: int = 5):
    """One synchronous step: each sequence with drafts accepts `accept[seq_id]` of them (default all), then gets
    the target's own token."""
    out = sched.schedule()
    finished = sched.launched(out)
    sampled, verified = {}, {}
    for seq_id in out.num_scheduled_tokens:
        seq = sched.by_id[seq_id]
        if seq.num_pending:
            drafts = out.scheduled_spec_decode_tokens.get(seq_id, [])
            a = len(drafts) if accept is None else min(accept.get(seq_id, len(drafts)), len(drafts))
            emitted = drafts[:a] + [token]
            sampled[seq_id] = emitted[0]
            if len(emitted) > 1:
                verified[seq_id] = emitted[1:]
    finished += [s for s in sched.resolve(out, sampled) if s not in finished]
    finished += sched.accept_verified(verified)
    return out, finished


def _decoding(prompt_len: int = 8, max_tokens: int = 20, block_size: int = 4, budget: int = 64, lookahead: int = 0):
    sched = Scheduler(KVCacheManager(64, block_size), 8, budget, num_lookahead_tokens=lookahead)
    seq = make_seq(prompt_len, max_tokens)
    sched.add(seq)
    step(sched)           # prefill; one token sampled
    return sched, seq


def test_drafts_are_extra_tokens_of_a_decode():
    sched, seq = _decoding()
    seq.spec_token_ids = [7, 8, 9]
    out, _ = step(sched, {seq.seq_id: 2})
    assert out.num_scheduled_tokens == {seq.seq_id: 4}
    assert out.scheduled_spec_decode_tokens == {seq.seq_id: [7, 8, 9]}
    assert seq.output_token_ids == [5, 7, 8, 5]            # two accepted, then the target's token
    assert seq.num_computed_tokens == seq.num_tokens - 1   # the drafts accepted are computed, the last is not
    assert seq.spec_token_ids == []                        # consumed


def test_drafts_fit_the_budget_and_the_length_limit():
    sched, seq = _decoding()
    sched.max_num_batched_tokens = 3
    seq.spec_token_ids = [7, 8, 9, 10]
    out, _ = step(sched, {seq.seq_id: 0})
    assert out.scheduled_spec_decode_tokens[seq.seq_id] == [7, 8]   # 1 + 2 tokens: the budget
    sched, seq = _decoding(max_tokens=3)     # 1 output so far; 2 more allowed
    seq.spec_token_ids = [7, 8, 9, 10]
    out, finished = step(sched)
    assert out.scheduled_spec_decode_tokens[seq.seq_id] == [7]      # + the target's token = the limit
    assert finished == [seq] and seq.status is Status.FINISHED_LENGTH and seq.output_token_ids == [5, 7, 5]
    assert sched.kv.num_free_blocks == 64


def test_a_stop_token_among_accepted_drafts_ends_the_sequence_there():
    sched = Scheduler(KVCacheManager(64, 4), 8, 64)
    seq = Request([3] * 8, SamplingParams(max_tokens=20, stop_token_ids=[8]), 0.0, 28, frozenset())
    sched.add(seq)
    step(sched)
    seq.spec_token_ids = [7, 8, 9]
    _, finished = step(sched)
    assert finished == [seq] and seq.output_token_ids == [5, 7, 8] and seq.stop_reason == 8
    assert sched.kv.num_free_blocks == 64


def test_lookahead_slots_are_reserved_and_rejected_slots_reused():
    sched, seq = _decoding(prompt_len=8, block_size=4, lookahead=4)
    assert len(sched.kv.block_ids(seq)) == 3       # 8 prompt tokens + 4 lookahead slots -> 12 slots
    seq.spec_token_ids = [7, 8, 9, 10]
    step(sched, {seq.seq_id: 0})                    # 9 known tokens, 4 drafts + 4 lookahead: 17 slots
    blocks = list(sched.kv.block_ids(seq))
    assert len(blocks) == 5
    seq.spec_token_ids = [7, 8, 9, 10]
    step(sched, {seq.seq_id: 0})                    # all rejected again: 10 known + 8 -> 18 slots, same blocks
    assert sched.kv.block_ids(seq) == blocks


def test_unverified_tokens_are_never_published():
    kv = KVCacheManager(64, 4)
    sched = Scheduler(kv, 8, 64)
    seq = make_seq(7, 20)
    sched.add(seq)
    step(sched)                                     # 7 prompt ids computed: one full block published
    assert kv.pool.num_cached_blocks == 1
    seq.spec_token_ids = [7, 8, 9, 10, 11]          # positions 8..12: the third block and one slot of a fourth
    out = sched.schedule()
    assert out.num_scheduled_tokens[seq.seq_id] == 6
    table = [kv.pool.blocks[i] for i in kv.block_ids(seq)]
    assert len(table) == 4
    assert table[1].block_hash is not None          # positions 4..7: known ids (3 prompt, 1 output), computed now
    assert table[2].block_hash is None and table[3].block_hash is None   # drafts: unverified, never published
    assert kv.pool.num_cached_blocks == 2


def _assert_published_computed(sched: Scheduler) -> None:
    """Every published block of a running sequence holds tokens whose KV is computed."""
    kv = sched.kv
    for seq in sched.running:
        assert kv._published.get(seq.seq_id, 0) * kv.block_size <= seq.num_computed_tokens


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 30), st.integers(1, 16), st.integers(0, 2)),
    st.tuples(st.just("step"), st.integers(0, 5), st.integers(0, 2**16)),
    st.tuples(st.just("abort"), st.integers(0, 1000)),
), min_size=1, max_size=50)


@settings(max_examples=120, deadline=None)
@given(ops=ops, num_blocks=st.integers(16, 40), block_size=st.sampled_from([1, 2, 4, 8]),
       budget=st.integers(1, 48), max_seqs=st.integers(1, 6), caching=st.booleans(), lookahead=st.integers(0, 4))
def test_random_interleavings_with_drafts_keep_block_accounting_exact(ops, num_blocks, block_size, budget,
                                                                     max_seqs, caching, lookahead):
    sched = Scheduler(KVCacheManager(num_blocks, block_size, caching), max_seqs, budget,
                      num_lookahead_tokens=lookahead)
    live: list[Request] = []
    rng = random.Random(0)

    def propose_and_step(k: int):
        for seq in sched.running:
            seq.spec_token_ids = [rng.randrange(3, 100) for _ in range(k)]
        _, finished = step(sched, {s.seq_id: rng.randrange(0, k + 1) for s in sched.running}, rng.randrange(3, 100))
        return finished

    for i, op in enumerate(ops):
        if op[0] == "add":
            _, prompt_len, max_tokens, prio = op
            if -(-(prompt_len + max_tokens + lookahead) // block_size) > num_blocks:
                continue  # the engine rejects these at add time
            seq = make_seq(prompt_len, max_tokens, prio, arrival=i, base=i % 3)
            sched.add(seq)
            live.append(seq)
        elif op[0] == "step":
            rng.seed(op[2])
            finished = propose_and_step(op[1])
            live = [s for s in live if s not in finished]
            _assert_published_computed(sched)
        elif live:
            seq = live.pop(op[1] % len(live))
            sched.finish(seq, Status.FINISHED_ABORTED)
        check_accounting(sched, live)
    for _ in range(10_000):               # everything left must finish: nothing gets stuck
        if not sched.has_unfinished():
            break
        finished = propose_and_step(3)
        live = [s for s in live if s not in finished]
        check_accounting(sched, live)
    assert not sched.has_unfinished() and not live
    assert sched.kv.num_free_blocks == num_blocks   # free + cached == total
