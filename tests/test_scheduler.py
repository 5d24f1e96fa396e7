"""Scheduler: token budget, chunked prefill, admission, preemption, priorities, and exact block accounting under
random interleavings of add / step / abort (property-based)."""
from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.request import Request, Status
from llmfleet.engine.scheduler import Scheduler
from llmfleet.protocol.sampling_params import SamplingParams


def make_seq(prompt_len: int, max_tokens: int, priority: int = 0, arrival: float = 0.0, base: int = 0) -> Request:
    prompt = [(base + i) % 97 + 3 for i in range(prompt_len)]
    return Request(prompt, SamplingParams(max_tokens=max_tokens), arrival, prompt_len + max_tokens, frozenset(),
                   priority=priority)


def run_step(sched: Scheduler, token: int = 5):
    out = sched.schedule()
    seqs = sched.by_id
    sampled = {i: token for i, n in out.num_scheduled_tokens.items()
               if seqs[i].num_computed_tokens + n == seqs[i].num_tokens}
    return out, sched.update(out, sampled)


def lens(out) -> list[int]:
    """Tokens scheduled per sequence, in batch order."""
    return list(out.num_scheduled_tokens.values())


def ids(seqs: list[Request]) -> list[int]:
    return [s.seq_id for s in seqs]


def check_accounting(sched: Scheduler, live: list[Request]) -> None:
    kv = sched.kv
    kv.pool.check_invariants()
    refs = Counter(b for seq in live for b in kv.block_ids(seq))
    for block in kv.pool.blocks:
        assert block.ref_count == refs.get(block.block_id, 0)
    owned = sum(1 for b in kv.pool.blocks if b.ref_count > 0)
    assert owned + kv.num_free_blocks == kv.pool.num_blocks


def test_decodes_first_then_prefill_chunks_within_the_budget():
    sched = Scheduler(KVCacheManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    a = make_seq(6, 4, arrival=0)
    sched.add(a)
    out, _ = run_step(sched)
    assert lens(out) == [6]
    b = make_seq(20, 4, arrival=1, base=50)
    sched.add(b)
    out, _ = run_step(sched)
    assert list(out.num_scheduled_tokens) == ids([a, b]) and lens(out) == [1, 9]   # decode first, chunk of 9
    out, _ = run_step(sched)
    assert lens(out) == [1, 9]
    out, _ = run_step(sched)
    assert lens(out) == [1, 2] and b.num_output_tokens == 1


def test_max_num_seqs_limits_admission():
    sched = Scheduler(KVCacheManager(64, 4), max_num_seqs=2, max_num_batched_tokens=100)
    seqs = [make_seq(3, 2, arrival=i, base=i * 10) for i in range(3)]
    for s in seqs:
        sched.add(s)
    out, _ = run_step(sched)
    assert list(out.num_scheduled_tokens) == ids(seqs[:2])


def test_preemption_frees_the_latest_lowest_priority_and_recomputes_it():
    sched = Scheduler(KVCacheManager(4, 2), max_num_seqs=4, max_num_batched_tokens=100)
    first, second = make_seq(3, 4, arrival=0), make_seq(3, 4, arrival=1, base=40)
    sched.add(first)
    sched.add(second)
    run_step(sched)                     # prefill: each holds 2 blocks, the pool is full
    run_step(sched)                     # position 3 still fits in the second block
    out, _ = run_step(sched)            # position 4 needs a 3rd block: second is preempted
    assert out.preempted_seq_ids == [second.seq_id] and second.status is Status.PREEMPTED
    assert sched.num_preemptions == 1 and list(out.num_scheduled_tokens) == [first.seq_id]
    assert second.num_computed_tokens == 0 and second.num_output_tokens == 2
    while sched.has_unfinished():
        run_step(sched)
    assert first.num_output_tokens == second.num_output_tokens == 4
    assert sched.kv.num_free_blocks == 4


def test_priority_orders_admission_and_chooses_the_preemption_victim():
    sched = Scheduler(KVCacheManager(4, 2), max_num_seqs=4, max_num_batched_tokens=100)
    low, high = make_seq(3, 4, priority=5, arrival=0), make_seq(3, 4, priority=0, arrival=1, base=40)
    sched.add(low)
    sched.add(high)
    out, _ = run_step(sched)
    assert list(out.num_scheduled_tokens) == ids([high, low])
    run_step(sched)
    out, _ = run_step(sched)
    assert out.preempted_seq_ids == [low.seq_id]


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 40), st.integers(1, 12), st.integers(0, 2)),
    st.tuples(st.just("step")),
    st.tuples(st.just("abort"), st.integers(0, 1000)),
), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=ops, num_blocks=st.integers(16, 40), block_size=st.sampled_from([1, 2, 4, 8]),
       budget=st.integers(1, 64), max_seqs=st.integers(1, 6), caching=st.booleans())
def test_random_interleavings_keep_block_accounting_exact(ops, num_blocks, block_size, budget, max_seqs, caching):
    sched = Scheduler(KVCacheManager(num_blocks, block_size, caching), max_seqs, budget)
    live: list[Request] = []
    for i, op in enumerate(ops):
        if op[0] == "add":
            _, prompt_len, max_tokens, prio = op
            if -(-(prompt_len + max_tokens) // block_size) > num_blocks:
                continue  # the engine rejects these at add time
            seq = make_seq(prompt_len, max_tokens, prio, arrival=i, base=i % 3)  # shared prefixes
            sched.add(seq)
            live.append(seq)
        elif op[0] == "step":
            _, finished = run_step(sched)
            live = [s for s in live if s not in finished]
        elif live:
            seq = live.pop(op[1] % len(live))
            sched.finish(seq, Status.FINISHED_ABORTED)
        check_accounting(sched, live)
    for _ in range(10_000):               # everything left must finish: nothing gets stuck
        if not sched.has_unfinished():
            break
        _, finished = run_step(sched)
        live = [s for s in live if s not in finished]
        check_accounting(sched, live)
    assert not sched.has_unfinished() and not live
    assert sched.kv.num_free_blocks == num_blocks   # free + cached == total


@settings(max_examples=150, deadline=None)
@given(ops=ops, num_blocks=st.integers(16, 40), block_size=st.sampled_from([1, 2, 4, 8]),
       budget=st.integers(1, 64), max_seqs=st.integers(1, 6), caching=st.booleans(),
       tokens=st.lists(st.integers(0, 6), min_size=1, max_size=50))
def test_asynchronous_steps_keep_accounting_exact(ops, num_blocks, block_size, budget, max_seqs, caching, tokens):
    """Step N is scheduled before step N-1's tokens are known (pending), then N-1 resolves; token 0 is EOS."""
    sched = Scheduler(KVCacheManager(num_blocks, block_size, caching), max_seqs, budget)
    live: list[Request] = []
    everyone: list[Request] = []
    inflight = None
    draws = iter(tokens * 1000)

    def step():
        nonlocal inflight
        out = sched.schedule()
        sched.launched(out)
        if inflight is not None:
            prev = inflight
            sched.resolve(prev, {i: next(draws) for i in prev.num_scheduled_tokens})
        inflight = out if out.num_scheduled_tokens else None
        for seq in list(live):
            if seq.status.finished and not seq.num_pending:
                live.remove(seq)
        assert all(s.num_pending <= 1 for s in sched.running)

    for i, op in enumerate(ops):
        if op[0] == "add":
            _, prompt_len, max_tokens, prio = op
            if -(-(prompt_len + max_tokens) // block_size) > num_blocks:
                continue
            seq = make_seq(prompt_len, max_tokens, prio, arrival=i, base=i % 3)
            seq.eos_token_ids = frozenset({0})
            sched.add(seq)
            live.append(seq)
            everyone.append(seq)
        elif op[0] == "step":
            step()
        elif live:
            seq = live.pop(op[1] % len(live))
            sched.finish(seq, Status.FINISHED_ABORTED)
            assert seq.num_pending == 0
        check_accounting(sched, [s for s in live if not s.status.finished])
    for _ in range(10_000):
        if not sched.has_unfinished() and inflight is None:
            break
        step()
        check_accounting(sched, [s for s in live if not s.status.finished])
    assert not sched.has_unfinished() and not live
    assert sched.kv.num_free_blocks == num_blocks
    for seq in everyone:
        assert seq.num_pending == 0 and min(seq.all_token_ids) >= 0   # known ids only, no placeholder ids
        out = seq.output_token_ids
        if seq.status is Status.FINISHED_STOPPED:
            assert out[-1] == 0 and 0 not in out[:-1]          # ends exactly at its first EOS
        elif seq.status is Status.FINISHED_LENGTH:
            assert len(out) == seq.params.max_tokens and 0 not in out


def _pooling_seq(prompt_len: int, base: int = 0) -> Request:
    from llmfleet.protocol.pooling_params import PoolingParams
    prompt = [(base + i) % 97 + 3 for i in range(prompt_len)]
    return Request(prompt, SamplingParams(max_tokens=1), 0.0, prompt_len, frozenset(), pooling=PoolingParams())


def test_pooling_requests_are_never_chunked_and_free_their_blocks_in_their_step():
    sched = Scheduler(KVCacheManager(16, 4, enable_caching=True), max_num_seqs=8, max_num_batched_tokens=10)
    gen, big, small = make_seq(6, 3), _pooling_seq(8, base=10), _pooling_seq(3, base=20)
    for seq in (gen, big, small):
        sched.add(seq)
    out, finished = run_step(sched)
    # gen takes 6 of the 10 tokens; big (8) does not fit the 4 left and is not chunked; FCFS: small waits too.
    assert lens(out) == [6] and finished == []
    out, finished = run_step(sched)
    assert dict(out.num_scheduled_tokens) == {gen.seq_id: 1, big.seq_id: 8}
    assert out.new_seqs[0].pooling is not None and big in finished and big.status is Status.FINISHED_STOPPED
    assert sched.kv.block_ids(big) == [] and big.seq_id not in sched.by_id
    out, finished = run_step(sched)
    assert dict(out.num_scheduled_tokens) == {gen.seq_id: 1, small.seq_id: 3} and big.seq_id in out.finished_seq_ids
    assert small in finished and gen in finished   # gen reached its 3 tokens
    check_accounting(sched, [])
    assert sched.kv.stats.queries == 6   # pooling requests never query (or fill) the prefix cache
