"""Data parallelism: two engine cores behind one client (each new request to the core with the fewest in flight,
counted exactly) and behind one real `llmfleet serve` process (both answer, the same greedy text as one core)."""
from __future__ import annotations

import asyncio

import httpx

from llmfleet.engine.dp_client import DataParallelClient, merge_stats, replica_config
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import EngineStats
from llmfleet.protocol.sampling_params import SamplingParams
from tests.checkpoints import checkpoint
from tests.serving import children, gone_within, start_server_process


def test_replica_configs_take_their_own_gpus_and_event_ports():
    config = EngineConfig(model="m", device="cuda:1", tensor_parallel_size=2, data_parallel_size=2,
                          kv_events_endpoint="tcp://127.0.0.1:5557")
    second = replica_config(config, 1)
    assert (second.device, second.kv_events_endpoint, second.data_parallel_size) == ("cuda:3", "tcp://127.0.0.1:5559", 1)
    assert replica_config(config, 0).device == "cuda:1"


def test_merged_stats_add_counts_and_average_usage():
    a = EngineStats(1, 2, 10, 20, 0.5, 4, 2, 0, 30, 40, spec_accepted_per_pos=[3, 1])
    b = EngineStats(0, 1, 20, 20, 0.0, 1, 1, 1, 5, 6, spec_accepted_per_pos=[2])
    merged = merge_stats([a, b])
    assert (merged.num_running, merged.num_free_blocks, merged.generation_tokens) == (1, 30, 46)
    assert merged.kv_cache_usage == 0.25 and merged.spec_accepted_per_pos == [5, 1]


def test_requests_spread_over_the_cores_by_load():
    async def run():
        config = EngineConfig(model=str(checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=64,
                              max_model_len=256, data_parallel_size=2)
        client = await DataParallelClient.start(config)
        try:
            params = SamplingParams(max_tokens=9, temperature=0, ignore_eos=True)
            streams = [await client.add_request([5, 6, 7, 8], params) for _ in range(2)]
            assert [c.num_in_flight for c in client.clients] == [1, 1]
            texts = []
            for stream in streams:
                async for output in stream:
                    last = output
                texts.append(last.outputs[0].token_ids)
            assert texts[0] == texts[1] and len(texts[0]) == 9
            per_core = [await c.stats() for c in client.clients]
            assert [s.generation_tokens for s in per_core] == [9, 9]
            assert (await client.stats()).generation_tokens == 18
        finally:
            await client.shutdown()

    asyncio.run(asyncio.wait_for(run(), 90))


def test_serve_with_two_engine_cores_answers_through_one_server():
    proc, url = start_server_process(checkpoint("llama"), extra_args=("--data-parallel-size", "2"))
    try:
        cores = children(proc.pid)
        spawned = [pid for pid in cores if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
        assert len(spawned) == 2   # the two engine cores (beside multiprocessing's resource tracker)
        body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 8, "temperature": 0, "ignore_eos": True}

        async def both():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(4)))

        answers = asyncio.run(both())
        assert [a.status_code for a in answers] == [200] * 4
        texts = {a.json()["choices"][0]["text"] for a in answers}
        assert len(texts) == 1 and all(a.json()["usage"]["completion_tokens"] == 8 for a in answers)
        metrics = httpx.get(url + "/metrics", timeout=10).text   # both cores' counts, added up
        assert 'vllm:generation_tokens_total{model_name="tiny"} 32.0' in metrics
    finally:
        proc.terminate()
        proc.wait(60)
    assert gone_within(cores, 10)
