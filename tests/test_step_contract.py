"""The plain-data step contract: what the scheduler sends (new sequences once, diffs after, placeholders counted,
finished ids), the worker state it builds (new / cached / preempted / finished diffs), input packing with
placeholders, and a real engine whose worker state mirrors the scheduler's after every step."""
from __future__ import annotations

import dataclasses

import pytest

from llmfleet import LLM, SamplingParams
from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.request import Request, Status
from llmfleet.engine.scheduler import Scheduler
from llmfleet.protocol.scheduler_output import CachedSeqData, NewSeqData, SchedulerOutput
from llmfleet.worker.inputs import prepare_inputs
from llmfleet.worker.seq_state import SeqStates
from tests.checkpoints import checkpoint


def make_seq(prompt: list[int], max_tokens: int = 8, arrival: float = 0.0, seed: int | None = None) -> Request:
    return Request(list(prompt), SamplingParams(max_tokens=max_tokens, seed=seed), arrival,
                   len(prompt) + max_tokens, frozenset())


def all_ints(value):
    """Every int anywhere in a contract value (dataclasses, lists, dicts), SamplingParams excepted."""
    if isinstance(value, SamplingParams):
        return
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from all_ints(getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from all_ints(k)
            yield from all_ints(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from all_ints(v)


def test_a_sequence_is_sent_whole_once_then_as_diffs():
    sched = Scheduler(KVCacheManager(16, 4), max_num_seqs=4, max_num_batched_tokens=5)
    seq = make_seq(list(range(10, 17)))                 # 7 prompt tokens: chunks of 5 and 2
    sched.add(seq)
    out = sched.schedule()
    assert out.new_seqs == [NewSeqData(seq.seq_id, seq.prompt_token_ids, [], seq.params, [0, 1], 0)]
    assert len(out.cached_seqs) == 0 and out.num_scheduled_tokens == {seq.seq_id: 5}
    sched.update(out, {})
    out = sched.schedule()                              # tokens 5, 6: the blocks already have room
    assert out.new_seqs == [] and out.cached_seqs == CachedSeqData([seq.seq_id], [[]], [5], [False])
    sched.update(out, {seq.seq_id: 40})
    out = sched.schedule()                              # token 7 (the sampled one) still fits in block 1
    assert out.cached_seqs == CachedSeqData([seq.seq_id], [[]], [7], [False])
    sched.update(out, {seq.seq_id: 41})
    out = sched.schedule()                              # token 8 opens block 2
    assert out.cached_seqs == CachedSeqData([seq.seq_id], [[2]], [8], [False])
    assert out.num_placeholder_tokens == {} and out.scheduled_spec_decode_tokens == {}


def test_a_preempted_sequence_resumes_with_a_whole_new_table():
    sched = Scheduler(KVCacheManager(4, 2, enable_caching=False), max_num_seqs=4, max_num_batched_tokens=100)
    first, second = make_seq([1, 2, 3], 4, arrival=0), make_seq([4, 5, 6], 4, arrival=1)
    for seq in (first, second):
        sched.add(seq)
    for token in (7, 8):
        out = sched.schedule()
        sched.update(out, {i: token for i in out.num_scheduled_tokens})
    out = sched.schedule()                              # first needs a 3rd block: second is preempted
    assert out.preempted_seq_ids == [second.seq_id] and list(out.num_scheduled_tokens) == [first.seq_id]
    assert out.cached_seqs.seq_ids == [first.seq_id] and out.cached_seqs.new_block_ids == [[3]]  # second's tail
    sched.update(out, {first.seq_id: 9})
    while second.status is not Status.RUNNING:
        out = sched.schedule()
        sched.update(out, {i: 9 for i in out.num_scheduled_tokens if sched.by_id[i] is first})
    cached = out.cached_seqs
    row = cached.seq_ids.index(second.seq_id)
    assert cached.resumed_from_preemption[row] and cached.num_computed_tokens[row] == 0
    assert cached.new_block_ids[row] == sched.kv.block_ids(second)   # the whole table, not a diff
    assert out.num_scheduled_tokens[second.seq_id] == 5              # 3 prompt + 2 outputs recomputed
    assert first.seq_id in out.finished_seq_ids                       # first ended by its length meanwhile
    assert all(n.seq_id != second.seq_id for n in out.new_seqs)


def test_finished_ids_reach_the_worker_once_with_the_next_step_that_runs():
    sched = Scheduler(KVCacheManager(16, 4), max_num_seqs=4, max_num_batched_tokens=100)
    a, b = make_seq([1, 2, 3], arrival=0), make_seq([4, 5], arrival=1)
    sched.add(a)
    out = sched.schedule()
    sched.update(out, {a.seq_id: 9})
    sched.finish(a, Status.FINISHED_ABORTED)
    never_sent = make_seq([6, 7], arrival=2)
    sched.add(never_sent)
    sched.finish(never_sent, Status.FINISHED_ABORTED)
    assert sched.schedule().finished_seq_ids == []      # nothing runs: the report waits
    sched.add(b)
    out = sched.schedule()
    assert out.finished_seq_ids == [a.seq_id]           # the worker never saw `never_sent`
    sched.update(out, {b.seq_id: 9})
    assert sched.schedule().finished_seq_ids == []
    assert a.seq_id not in sched.by_id and never_sent.seq_id not in sched.by_id


def test_asynchronous_steps_count_placeholders_instead_of_sentinel_ids():
    sched = Scheduler(KVCacheManager(16, 4), max_num_seqs=4, max_num_batched_tokens=100)
    seq = make_seq([1, 2, 3], max_tokens=3)
    sched.add(seq)
    prev = sched.schedule()
    sched.launched(prev)                                # its token is on the device only
    assert seq.num_pending == 1 and seq.all_token_ids == [1, 2, 3] and seq.num_tokens == 4
    for token in (20, 21):
        out = sched.schedule()
        assert out.num_placeholder_tokens == {seq.seq_id: 1} and out.num_scheduled_tokens == {seq.seq_id: 1}
        assert out.cached_seqs.num_computed_tokens == [seq.num_computed_tokens]
        assert min(all_ints(out)) >= 0
        sched.launched(out)
        sched.resolve(prev, {seq.seq_id: token})
        prev = out
    assert seq.status is Status.FINISHED_LENGTH and seq.num_pending == 1   # ended by its length, one in flight
    sched.resolve(prev, {seq.seq_id: 22})
    assert seq.output_token_ids == [20, 21, 22] and seq.num_pending == 0 and seq.seq_id not in sched.by_id


def contract(new=(), cached=(), scheduled=None, placeholders=None, finished=()) -> SchedulerOutput:
    out = SchedulerOutput(new_seqs=list(new), finished_seq_ids=list(finished))
    for row in cached:
        out.cached_seqs.add(*row)
    out.num_scheduled_tokens = dict(scheduled or {})
    out.num_placeholder_tokens = dict(placeholders or {})
    return out


def test_worker_state_follows_new_cached_preempted_and_finished_diffs():
    states = SeqStates()
    seeded = SamplingParams(seed=3)
    [s] = states.apply(contract(new=[NewSeqData(7, [1, 2, 3], [], seeded, [4, 5], 0)], scheduled={7: 3}))
    assert (s.token_ids, s.block_ids, s.num_computed_tokens, s.num_tokens) == ([1, 2, 3], [4, 5], 0, 3)
    assert s.generator is not None and s.generator.initial_seed() == 3
    states.sampled(1, [s])
    assert s.pending_steps == [1] and s.num_tokens == 4 and s.token_ids == [1, 2, 3]
    assert states.apply(contract(cached=[(7, [9], 3, False)], scheduled={7: 1})) == [s]
    assert s.block_ids == [4, 5, 9] and s.num_computed_tokens == 3        # appended
    states.sampled(2, [s])
    states.received(1, [s], [50])
    assert s.token_ids == [1, 2, 3, 50] and s.pending_steps == [2] and s.output_token_ids == [50]
    states.received(2, [s], [51])
    generator = s.generator
    states.apply(contract(cached=[(7, [0, 1, 2], 0, True)], scheduled={7: 5}))   # resumed after preemption
    assert s.block_ids == [0, 1, 2] and s.num_computed_tokens == 0 and s.token_ids == [1, 2, 3, 50, 51]
    assert s.generator is generator                                       # the seeded stream goes on
    states.apply(contract(finished=[7], new=[NewSeqData(8, [6], [60, 61], SamplingParams(), [3], 0)],
                          scheduled={8: 3}))
    assert states.get(7) is None and len(states) == 1
    assert states.get(8).token_ids == [6, 60, 61] and states.get(8).generator is None


def test_worker_state_errors_and_tokens_of_finished_sequences():
    states = SeqStates()
    with pytest.raises(RuntimeError, match="sequence 5"):
        states.apply(contract(cached=[(5, [], 0, False)], scheduled={5: 1}))
    [s] = states.apply(contract(new=[NewSeqData(6, [1], [], SamplingParams(), [0], 0)], scheduled={6: 1}))
    states.sampled(1, [s])
    states.sampled(2, [s])
    with pytest.raises(RuntimeError, match="out of order"):
        states.received(2, [s], [9])
    states.apply(contract(finished=[6]))
    states.received(1, [s], [9])                        # read back after the sequence ended: ignored
    assert s.token_ids == [1]


def test_inputs_pack_placeholders_as_zero_and_sample_at_each_sequence_end():
    states = SeqStates()
    out = contract(new=[NewSeqData(1, [5, 6, 7], [], SamplingParams(), [0], 0),
                        NewSeqData(2, [8, 9, 10, 11, 12], [], SamplingParams(), [1, 2], 0)],
                   scheduled={1: 3, 2: 4})
    seqs = states.apply(out)
    inputs = prepare_inputs(seqs, [3, 4], block_size=4)
    assert inputs.input_ids.tolist() == [5, 6, 7, 8, 9, 10, 11] and inputs.sample_rows == [0]
    states.sampled(1, [seqs[0]])
    out = contract(cached=[(1, [], 3, False), (2, [], 4, False)], scheduled={1: 1, 2: 1}, placeholders={1: 1})
    seqs = states.apply(out)
    inputs = prepare_inputs(seqs, [1, 1], block_size=4)
    assert inputs.input_ids.tolist() == [0, 12] and inputs.positions.tolist() == [3, 4]
    assert inputs.slot_mapping.tolist() == [3, 2 * 4 + 0] and inputs.sample_rows == [0, 1]
    assert inputs.num_decodes == 2


@pytest.mark.parametrize("options", [dict(), dict(async_scheduling=False), dict(num_kv_blocks=24, block_size=16)])
def test_engine_worker_state_mirrors_the_scheduler_after_every_step(options):
    llm = LLM(str(checkpoint("qwen3")), device="cpu", dtype="float32", max_num_batched_tokens=64, **options)
    engine, runner = llm.engine, llm.engine.runner
    params = SamplingParams(temperature=1.0, max_tokens=40, ignore_eos=True)
    for i, n in enumerate((3, 70, 150, 200)):
        engine.add_request(f"r{i}", [(i * 31 + j) % 500 + 3 for j in range(n)], params)
    while engine.has_unfinished_requests():
        engine.step()
        for seq in engine.scheduler.running:
            state = runner.seqs.get(seq.seq_id)
            if state is None:                           # admitted and scheduled only from the next step on
                continue
            assert state.token_ids == seq.all_token_ids and len(state.pending_steps) == seq.num_pending
            assert state.block_ids == engine.kv.block_ids(seq)
    engine.step()                                       # drains a launched step, if any
    engine.add_request("last", [5, 6, 7], SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    assert len(runner.seqs) <= 1                        # earlier states were dropped through finished_seq_ids
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks
    if "num_kv_blocks" in options:
        assert stats.num_preemptions > 0


def test_a_seeded_sequence_draws_the_same_tokens_when_preempted():
    """The worker keeps a preempted sequence's generator: its random stream goes on where it stopped."""
    prompts = [[(i * 31 + j) % 500 + 3 for j in range(n)] for i, n in enumerate((300, 40))]
    params = [SamplingParams(temperature=0, max_tokens=64, ignore_eos=True),
              SamplingParams(temperature=1.0, max_tokens=64, seed=11, ignore_eos=True)]

    def run(**options):
        llm = LLM(str(checkpoint("qwen3")), device="cpu", dtype="float32", block_size=16, **options)
        outputs = llm.generate(prompts, params)
        return llm.engine.stats().num_preemptions, outputs[1].outputs[0].token_ids

    _, alone = run()
    preemptions, squeezed = run(num_kv_blocks=24)       # the seeded one, arrived last, is preempted
    assert preemptions > 0 and squeezed == alone
