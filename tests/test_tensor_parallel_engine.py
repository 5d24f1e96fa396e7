"""Tensor parallelism through worker processes (gloo on CPU): greedy tokens exact against HF transformers at TP 2
and 4 for every architecture (llama, tied llama, mistral, qwen2, qwen3), the step messages' round trip, clear refusals of bad parallel settings, and a worker
that dies mid-generation: its requests fail with an error naming the rank, and the engine stops."""
from __future__ import annotations

import asyncio
import functools
import os
import signal

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from llmfleet import LLM, SamplingParams
from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.engine.streams import EngineDeadError
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.scheduler_output import NewSeqData, SchedulerOutput
from llmfleet.worker.executor.messages import Launch, decode_driver_message, encode
from llmfleet.worker.executor.multiproc import WorkerDiedError
from tests.checkpoints import ARCHS, checkpoint
from tests.serving import children, gone_within

NEW_TOKENS = 12
PROMPTS = [[5, 6, 7], [17, 300, 42, 9, 88, 120, 7, 7, 64, 3, 200], list(range(30, 70))]


@functools.lru_cache(maxsize=None)
def hf_greedy(arch: str) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(checkpoint(arch), dtype=torch.float32).eval()
    with torch.no_grad():
        return [model.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=10**9,
                               pad_token_id=0)[0, len(p):].tolist() for p in PROMPTS]


def tp_greedy(arch: str, tp: int, **options) -> list[list[int]]:
    """The prompts' greedy tokens through one engine of `tp` worker processes (stopped afterwards)."""
    llm = LLM(str(checkpoint(arch)), device="cpu", dtype="float32", tensor_parallel_size=tp, num_kv_blocks=64,
              block_size=4, max_num_batched_tokens=32, **options)   # 32: the longest prompt prefills in 2 chunks
    try:
        assert llm.engine.runner.world_size == tp and llm.engine.runner.num_blocks == 64
        params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
        return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    finally:
        llm.engine.core.shutdown()


@pytest.mark.parametrize("arch", ARCHS)
def test_tp2_matches_hf(arch):
    assert tp_greedy(arch, 2) == hf_greedy(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_tp4_matches_hf(arch):   # 4 ranks over 2 KV heads: each KV head is replicated on 2 ranks
    assert tp_greedy(arch, 4) == hf_greedy(arch)


def test_tp2_seeded_sampling_logprobs_and_embeddings_match_one_process():
    params = SamplingParams(temperature=0.8, top_k=50, seed=7, max_tokens=8, logprobs=2, prompt_logprobs=1,
                            ignore_eos=True)
    runs, vectors = [], []
    for tp in (1, 2):
        llm = LLM(str(checkpoint("qwen2")), device="cpu", dtype="float32", tensor_parallel_size=tp, num_kv_blocks=64)
        try:
            runs.append(llm.generate(PROMPTS[:2], params, use_tqdm=False))
            vectors.append(torch.tensor([o.outputs.data for o in llm.embed(PROMPTS)]))
        finally:
            llm.engine.core.shutdown()
    assert vectors[0].shape == (3, 64) and torch.allclose(vectors[0], vectors[1], atol=1e-5)
    for one, two in zip(*runs):
        assert one.outputs[0].token_ids == two.outputs[0].token_ids
        for a, b in zip(one.outputs[0].logprobs, two.outputs[0].logprobs):
            assert a.keys() == b.keys()
            assert all(abs(a[t].logprob - b[t].logprob) < 1e-4 for t in a)
        assert len(one.prompt_logprobs) == len(two.prompt_logprobs) == len(one.prompt_token_ids)


def test_launch_message_round_trips_with_a_grammar_bitmask():
    out = SchedulerOutput(new_seqs=[NewSeqData(3, [1, 2, 3], [], SamplingParams(temperature=0, stop=["x"]), [0], 0)],
                          num_scheduled_tokens={3: 3}, grammar_seq_ids=[3],
                          grammar_bitmask=np.arange(32, dtype=np.int32).reshape(2, 16))
    back = decode_driver_message(encode(Launch(7, None, out)))
    assert back.step_id == 7 and back.prev_step_id is None
    assert back.out.new_seqs[0].params == out.new_seqs[0].params
    assert np.array_equal(back.out.grammar_bitmask, out.grammar_bitmask)
    assert back.out.num_scheduled_tokens == {3: 3}


@pytest.mark.parametrize("options, field", [
    (dict(tensor_parallel_size=0), "tensor_parallel_size"),
    (dict(tensor_parallel_size=2, distributed_executor_backend="uni"), "distributed_executor_backend"),
    (dict(distributed_executor_backend="ray"), "distributed_executor_backend"),
    (dict(pipeline_parallel_size=2), "pipeline_parallel_size"),
    (dict(data_parallel_size=0), "data_parallel_size"),
])
def test_bad_parallel_settings_name_their_field(options, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(model="m", **options)


def _workers(core_pid: int) -> list[int]:
    """The worker processes under an engine core (they fork from its fork server, a child of the core)."""
    return [worker for child in children(core_pid) for worker in children(child)]


def test_killed_worker_fails_requests_and_stops_the_engine():
    async def run():
        engine = await EngineCoreClient.start(EngineConfig(
            model=str(checkpoint("llama")), device="cpu", dtype="float32", tensor_parallel_size=2,
            num_kv_blocks=96, max_model_len=256))
        died = []
        engine.on_dead = died.append
        try:
            params = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
            streams = [await engine.add_request([5, 6, 7], params) for _ in range(2)]
            await streams[0].__anext__()
            workers = _workers(engine.pid)
            assert len(workers) == 2
            victim = max(workers)   # the later-started one: rank 1
            os.kill(victim, signal.SIGKILL)
            for stream in streams:
                with pytest.raises(EngineDeadError, match=r"worker rank \d \(pid \d+\) died with exit code -9"):
                    async for _ in stream:
                        pass
            assert len(died) == 1 and "the engine stops" in str(died[0])
            with pytest.raises(EngineDeadError):
                await engine.add_request([5, 6, 7], params)
        finally:
            await engine.shutdown()
        assert gone_within(workers, 10)

    asyncio.run(asyncio.wait_for(run(), 90))


def test_a_failing_worker_is_named_with_its_cause():
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", tensor_parallel_size=2, num_kv_blocks=64)
    executor = llm.engine.runner
    try:
        executor._steps[1].send(b"\xc1 not a message")   # rank 1 cannot decode it: it fails, says why, and exits
        with pytest.raises(WorkerDiedError, match=r"worker rank 1 failed: (msgspec\.)?\w*DecodeError"):
            llm.generate(PROMPTS[:1], SamplingParams(max_tokens=4), use_tqdm=False)
        assert executor.procs[1].exitcode == 1
        with pytest.raises(WorkerDiedError, match="worker rank 1 failed"):   # and so does every later step
            executor.launch(SchedulerOutput())
    finally:
        llm.engine.core.shutdown()
    assert all(p.exitcode is not None for p in executor.procs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_worker_over_nccl_with_cuda_graphs_matches_the_in_process_runner():
    path = str(checkpoint("llama"))
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    results = []
    for backend in ("uni", "mp"):
        # the same kernels in both: bf16 tokens must agree exactly
        llm = LLM(path, device="cuda", dtype="bfloat16", distributed_executor_backend=backend, num_kv_blocks=64,
                  block_size=16, cuda_graph_max_batch=8, cuda_graph_max_tokens=64)
        try:
            assert llm.engine.runner.graphs is not None
            results.append([list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)])
        finally:
            llm.engine.core.shutdown()
    assert results[0] == results[1]
