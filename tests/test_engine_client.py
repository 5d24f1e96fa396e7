"""EngineCoreClient over a real engine-core process on a tiny random checkpoint: streaming equal to the in-process
engine, validation errors before anything is sent, cancellation and aborts returning every block, an idle core
that sleeps, and failures: a core that dies (kill -9, or a failure it reports) fails every in-flight request and
every later one; shutdown leaves no process behind."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.engine.streams import EngineDeadError, RequestAbortedError
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.sampling_params import SamplingParams

NUM_BLOCKS = 96


def _config(checkpoint, **kw) -> EngineConfig:
    return EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=NUM_BLOCKS,
                        max_model_len=256, max_num_seqs=64, **kw)


class _LoopThread:
    """An event loop on its own thread, so one client (bound to its loop) serves every test of the module."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def loop():
    runner = _LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def engine(loop, tiny_checkpoint):
    client = loop.run(EngineCoreClient.start(_config(tiny_checkpoint("llama"))))
    yield client
    loop.run(client.shutdown())


def _greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **kw)


async def _idle(engine: EngineCoreClient, timeout: float = 5.0):
    """Stats once nothing runs any more (aborts reach the core as messages)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await engine.stats()
        if (stats.num_running == stats.num_waiting == 0 and engine.num_in_flight == 0) \
                or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)


def test_generate_streams_cumulative_outputs_matching_the_in_process_engine(engine, loop, tiny_checkpoint):
    async def run():
        return [out async for out in engine.generate("Hello, world", _greedy(12), "a")]

    outputs = loop.run(run())
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


def test_n_samples_stop_strings_and_logprobs_cross_the_process_boundary(engine, loop, tiny_checkpoint):
    params = SamplingParams(n=3, max_tokens=10, temperature=0.8, seed=7, logprobs=2, ignore_eos=True)
    final = loop.run(_last(engine.generate([5, 6, 7, 8], params, "n3")))
    sync = LLMEngine(_config(tiny_checkpoint("llama")))
    sync.add_request("n3", [5, 6, 7, 8], params)
    expected = None
    while sync.has_unfinished_requests():
        expected = sync.step() or expected
    assert [c.token_ids for c in final.outputs] == [c.token_ids for c in expected[0].outputs]
    assert all(len(c.logprobs) == 10 and c.finish_reason == "length" for c in final.outputs)
    text = expected[0].outputs[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    stopped = loop.run(_last(engine.generate([5, 6, 7, 8], SamplingParams(
        max_tokens=10, temperature=0.8, seed=7, stop=[stop], ignore_eos=True))))
    assert stopped.outputs[0].finish_reason == "stop" and stopped.outputs[0].stop_reason == stop
    assert stop not in stopped.outputs[0].text and text.startswith(stopped.outputs[0].text)
    assert loop.run(_idle(engine)).num_free_blocks == NUM_BLOCKS


async def _last(outputs):
    last = None
    async for last in outputs:
        pass
    return last


@pytest.mark.parametrize("prompt, field", [("", "prompt"), ([], "prompt"), ([1, 99999], "prompt"),
                                           ([5] * 300, "prompt")])
def test_invalid_requests_raise_value_error_and_the_engine_goes_on(engine, loop, prompt, field):
    async def run():
        with pytest.raises(ValueError, match=f"^{field}:"):
            await engine.add_request(prompt, _greedy(4))
        return await _last(engine.generate([5, 6, 7], _greedy(3)))

    final = loop.run(run())
    assert len(final.outputs[0].token_ids) == 3
    assert engine.num_waiting == 0 and engine.num_in_flight == 0


def test_duplicate_request_id_is_rejected(engine, loop):
    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(50), "dup")
        with pytest.raises(ValueError, match="request_id"):
            await engine.add_request([5, 6, 7], _greedy(4), "dup")
        stream.close()
        return await _idle(engine)

    assert loop.run(run()).num_free_blocks == NUM_BLOCKS


def test_cancelled_consumer_aborts_the_request_and_frees_its_blocks(engine, loop):
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
        return busy, await _idle(engine), seen

    busy, stats, seen = loop.run(run())
    assert busy.num_free_blocks < NUM_BLOCKS and not seen[-1].finished
    assert stats.num_running == 0 and stats.num_free_blocks == NUM_BLOCKS


def test_concurrent_requests_all_complete_and_return_every_block(engine, loop):
    async def run():
        finals = await asyncio.gather(*(_last(engine.generate([5 + i, 6, 7], _greedy(4 + i % 3)))
                                        for i in range(24)))
        return finals, await _idle(engine)

    finals, stats = loop.run(run())
    assert [len(f.outputs[0].token_ids) for f in finals] == [4 + i % 3 for i in range(24)]
    assert stats.num_free_blocks == NUM_BLOCKS


def test_abort_all_ends_readers_with_request_aborted(engine, loop):
    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(200))
        first = await stream.__anext__()
        engine.abort_all()
        with pytest.raises(RequestAbortedError):
            async for _ in stream:
                pass
        return first, await _idle(engine)

    first, stats = loop.run(run())
    assert not first.finished and stats.num_free_blocks == NUM_BLOCKS


def test_idle_core_sleeps_instead_of_spinning(engine, loop):
    loop.run(_idle(engine))
    before = _cpu_ticks(engine.pid)
    time.sleep(1.0)
    assert _cpu_ticks(engine.pid) - before <= 5  # clock ticks (1/100 s): a spinning loop would use ~100


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_start_failure_is_raised_with_its_cause(loop):
    with pytest.raises(EngineDeadError, match="model"):
        loop.run(EngineCoreClient.start(EngineConfig(model="/nonexistent/model", device="cpu")))


def _fresh(loop, tiny_checkpoint) -> EngineCoreClient:
    return loop.run(EngineCoreClient.start(_config(tiny_checkpoint("llama"))))


def test_killed_core_fails_in_flight_requests_and_later_submissions(loop, tiny_checkpoint):
    engine = _fresh(loop, tiny_checkpoint)
    died = []
    engine.on_dead = died.append

    async def run():
        streams = [await engine.add_request([5, 6, 7], _greedy(200)) for _ in range(4)]
        await streams[0].__anext__()
        os.kill(engine.pid, signal.SIGKILL)
        for stream in streams:
            with pytest.raises(EngineDeadError, match="killed by signal 9"):
                async for _ in stream:
                    pass
        with pytest.raises(EngineDeadError):
            await engine.add_request([5, 6, 7], _greedy(3))
        with pytest.raises(EngineDeadError):
            await engine.stats()

    try:
        loop.run(asyncio.wait_for(run(), 20))
        assert engine.error is not None and len(died) == 1
    finally:
        loop.run(engine.shutdown())


def test_a_failure_inside_the_core_is_reported_with_its_cause(loop, tiny_checkpoint):
    engine = _fresh(loop, tiny_checkpoint)

    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(200))
        await stream.__anext__()
        engine._input.send(b"\xc1 not a message")  # undecodable: the core fails, says why, and exits
        with pytest.raises(EngineDeadError, match="undecodable message"):
            async for _ in stream:
                pass

    try:
        loop.run(asyncio.wait_for(run(), 20))
    finally:
        loop.run(engine.shutdown())
    assert engine._process.exitcode == 1


def test_shutdown_fails_in_flight_streams_and_leaves_no_process(loop, tiny_checkpoint):
    engine = _fresh(loop, tiny_checkpoint)

    async def run():
        stream = await engine.add_request([5, 6, 7], _greedy(200))
        await stream.__anext__()
        await engine.shutdown()
        with pytest.raises(EngineDeadError, match="shut down"):
            async for _ in stream:
                pass
        with pytest.raises(EngineDeadError):
            await engine.add_request([5, 6, 7], _greedy(3))

    loop.run(asyncio.wait_for(run(), 30))
    assert not engine._process.is_alive() and engine._process.exitcode == 0
