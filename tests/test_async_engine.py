"""AsyncEngine over the real LLMEngine on a tiny random checkpoint: streaming, validation errors, cancellation,
aborts, idleness without spinning, a crashing step, shutdown."""
from __future__ import annotations

import asyncio
import time

import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.engine.async_engine import AsyncEngine, EngineDeadError, RequestAbortedError
from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.protocol.sampling_params import SamplingParams

NUM_BLOCKS = 96


def _config(checkpoint) -> EngineConfig:
    return EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=NUM_BLOCKS,
                        max_model_len=256, max_num_seqs=64)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    config = _config(tiny_checkpoint("llama"))
    engine = AsyncEngine.start(lambda: LLMEngine(config))
    yield engine
    engine.shutdown()


def _greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **kw)


async def _idle(engine: AsyncEngine, timeout: float = 2.0):
    """Stats once nothing runs any more (aborts are applied between steps)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await engine.stats()
        if (stats.num_running == stats.num_waiting == 0 and engine.num_in_flight == 0) \
                or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)


def test_generate_streams_cumulative_outputs_matching_the_sync_engine(engine, tiny_checkpoint):
    async def run():
        return [out async for out in engine.generate("Hello, world", _greedy(12), "a")]

    outputs = asyncio.run(run())
    final = outputs[-1]
    assert final.finished and not any(o.finished for o in outputs[:-1])
    assert len(final.outputs[0].token_ids) == 12 and final.outputs[0].finish_reason == "length"
    for before, after in zip(outputs, outputs[1:]):  # cumulative: each snapshot extends the previous one
        assert after.outputs[0].token_ids[:len(before.outputs[0].token_ids)] == before.outputs[0].token_ids
    sync = LLMEngine(_config(tiny_checkpoint("llama")))
    sync.add_request("a", "Hello, world", _greedy(12))
    last = None  # a step may return nothing: its tokens arrive with the next one (asynchronous scheduling)
    while sync.has_unfinished_requests():
        last = sync.step() or last
    assert last[0].outputs[0].token_ids == final.outputs[0].token_ids
    assert last[0].outputs[0].text == final.outputs[0].text


@pytest.mark.parametrize("prompt, field", [("", "prompt"), ([], "prompt"), ([1, 99999], "prompt"),
                                           ([5] * 300, "prompt")])
def test_invalid_requests_raise_value_error_and_the_engine_goes_on(engine, prompt, field):
    async def run():
        with pytest.raises(ValueError, match=f"^{field}:"):
            await engine.add_request(prompt, _greedy(4))
        return [out async for out in engine.generate([5, 6, 7], _greedy(3))][-1]

    final = asyncio.run(run())
    assert len(final.outputs[0].token_ids) == 3
    assert engine.num_waiting == 0 and engine.num_in_flight == 0


def test_duplicate_request_id_is_rejected(engine):
    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(50), "dup")
        with pytest.raises(ValueError, match="request_id"):
            await engine.add_request([5, 6, 7], _greedy(4), "dup")
        stream.close()
        return await _idle(engine)

    assert asyncio.run(run()).num_free_blocks == NUM_BLOCKS


def test_cancelled_consumer_aborts_the_request_and_frees_its_blocks(engine):
    async def run():
        seen = []

        async def consume():
            async for out in engine.generate([5, 6, 7, 8] * 10, _greedy(200)):
                seen.append(out)

        task = asyncio.create_task(consume())
        while len(seen) < 2:
            await asyncio.sleep(0.005)
        busy = await engine.stats()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        start = time.monotonic()
        stats = await _idle(engine, timeout=1.0)
        return busy, stats, time.monotonic() - start, seen

    busy, stats, elapsed, seen = asyncio.run(run())
    assert busy.num_free_blocks < NUM_BLOCKS and not seen[-1].finished
    assert stats.num_running == 0 and stats.num_free_blocks == NUM_BLOCKS and elapsed < 1.0


def test_concurrent_requests_all_complete_and_return_every_block(engine):
    async def run():
        async def one(i):
            return [o async for o in engine.generate([5 + i, 6, 7], _greedy(4 + i % 3))][-1]

        finals = await asyncio.gather(*(one(i) for i in range(24)))
        return finals, await _idle(engine)

    finals, stats = asyncio.run(run())
    assert [len(f.outputs[0].token_ids) for f in finals] == [4 + i % 3 for i in range(24)]
    assert stats.num_free_blocks == NUM_BLOCKS


def test_abort_all_ends_readers_with_request_aborted(engine):
    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(200))
        first = await stream.__anext__()
        engine.abort_all()
        with pytest.raises(RequestAbortedError):
            async for _ in stream:
                pass
        return first, await _idle(engine)

    first, stats = asyncio.run(run())
    assert not first.finished and stats.num_free_blocks == NUM_BLOCKS


def test_idle_engine_sleeps_instead_of_spinning(engine):
    calls = []

    def count(e):
        original = type(e).has_unfinished_requests
        e.has_unfinished_requests = lambda: calls.append(1) or original(e)

    engine.call(count).result(5)
    time.sleep(0.3)
    engine.call(lambda e: delattr(e, "has_unfinished_requests")).result(5)
    assert len(calls) <= 2


def test_factory_error_is_raised_by_start():
    with pytest.raises(ValueError, match="model"):
        AsyncEngine.start(lambda: LLMEngine(EngineConfig(model="/nonexistent/model", device="cpu")))


def test_crashed_step_fails_in_flight_requests_and_later_submissions(tiny_checkpoint):
    config = _config(tiny_checkpoint("llama"))
    engine = AsyncEngine.start(lambda: LLMEngine(config))

    def boom():
        raise RuntimeError("injected step failure")

    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(100))
        await stream.__anext__()
        engine.call(lambda e: setattr(e, "step", boom))
        with pytest.raises(EngineDeadError, match="injected step failure"):
            async for _ in stream:
                pass
        with pytest.raises(EngineDeadError):
            await engine.add_request([5, 6, 7], _greedy(3))

    try:
        asyncio.run(asyncio.wait_for(run(), 10))
        assert engine.error is not None
    finally:
        engine.shutdown()


def test_shutdown_fails_in_flight_streams(tiny_checkpoint):
    config = _config(tiny_checkpoint("llama"))
    engine = AsyncEngine.start(lambda: LLMEngine(config))

    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(200))
        await stream.__anext__()
        await asyncio.to_thread(engine.shutdown)
        with pytest.raises(EngineDeadError, match="shut down"):
            async for _ in stream:
                pass
        with pytest.raises(EngineDeadError):
            await engine.add_request([5, 6, 7], _greedy(3))

    asyncio.run(asyncio.wait_for(run(), 10))
