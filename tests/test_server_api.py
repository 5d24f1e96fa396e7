"""The OpenAI-compatible API through the official `openai` client (sync and async), against a real server on
loopback with a tiny random checkpoint: completions and chat, streamed and not, n, stop, seed, logprobs, usage."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import openai
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

try:
    from serving import engine_stats
except ImportError:
    from tests.serving import engine_stats

MODEL = "tiny"
MESSAGES = [{"role": "system", "content": "You count."}, {"role": "user", "content": "one, two, three"}]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    config = EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=256,
                          max_model_len=256)
    holder = {}
    app = create_app(ServerConfig(served_model_names=(MODEL, "tiny-alias")), config,
                     on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, ctx=holder["ctx"], tokenizer=holder["ctx"].tokenizer)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _greedy(**kw):
    return {"temperature": 0, "extra_body": {"ignore_eos": True}, **kw}


def _chat_prompt_len(tokenizer) -> int:
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_models_health_ready(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL, "tiny-alias"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}


def test_completion_usage_and_shape(server, client):
    out = client.completions.create(model=MODEL, prompt="Hello, world", max_tokens=7, **_greedy())
    assert out.object == "text_completion" and out.id.startswith("cmpl-") and out.model == MODEL
    assert len(out.choices) == 1 and out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(server.tokenizer.encode("Hello, world"))
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7


def test_chat_usage_and_shape(server, client):
    out = client.chat.completions.create(model="tiny-alias", messages=MESSAGES, max_completion_tokens=6, **_greedy())
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-") and out.model == "tiny-alias"
    assert out.choices[0].message.role == "assistant" and out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == _chat_prompt_len(server.tokenizer)
    assert out.usage.completion_tokens == 6


def test_streamed_text_equals_whole_text_at_temperature_zero(client):
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, **_greedy())
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}, **_greedy()))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])

    whole = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, **_greedy())
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, stream=True,
                                            **_greedy()))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n_choices_streamed_and_whole(client):
    whole = client.completions.create(model=MODEL, prompt="The quick", n=2, max_tokens=5, seed=7, temperature=1.0,
                                      extra_body={"ignore_eos": True})
    assert sorted(c.index for c in whole.choices) == [0, 1] and whole.usage.completion_tokens == 10
    texts = {0: "", 1: ""}
    for chunk in client.completions.create(model=MODEL, prompt="The quick", n=2, max_tokens=5, seed=7,
                                           temperature=1.0, stream=True, extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {c.index: c.text for c in whole.choices}
    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, max_tokens=4, **_greedy())
    assert [c.index for c in chat.choices] == [0, 1] and chat.usage.completion_tokens == 8
    assert chat.choices[0].message.content == chat.choices[1].message.content  # greedy: both the same


def test_prompt_list_and_token_ids(server, client):
    ids = server.tokenizer.encode("Hello, world")
    by_text = client.completions.create(model=MODEL, prompt="Hello, world", max_tokens=5, **_greedy())
    batch = client.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=5, **_greedy())
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == batch.choices[1].text == by_text.choices[0].text
    assert batch.usage.prompt_tokens == 2 * len(ids) and batch.usage.completion_tokens == 10


def test_stop_string_cuts_the_text(client):
    text = client.completions.create(model=MODEL, prompt="Hello", max_tokens=24, **_greedy()).choices[0].text
    start = next(i for i in range(2, len(text) - 2) if "\ufffd" not in text[i:i + 2] and text[i:i + 2].strip())
    stop = text[start:start + 2]
    out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=24, stop=[stop], **_greedy())
    assert out.choices[0].text == text[:text.find(stop)]
    assert out.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=24, stop=stop, stream=True, **_greedy()))
    assert streamed == out.choices[0].text


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.completions.create(model=MODEL, prompt="Hello", max_tokens=16, temperature=1.0, seed=seed,
                                         extra_body={"ignore_eos": True}).choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(seed) != first for seed in (1, 2, 3))


def test_completion_logprobs(client):
    out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, logprobs=3, **_greedy())
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    tokens = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, **_greedy()).usage
    assert tokens.completion_tokens == 6
    for value, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 4 and value == max(top.values()) and value <= 0  # greedy picks the top token
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]


def test_chat_logprobs_streamed_and_whole(client):
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, logprobs=True,
                                           top_logprobs=2, **_greedy())
    content = whole.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == entry.top_logprobs[0].logprob and bytes(entry.bytes).decode() == entry.token
    streamed = [e for c in client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                                          logprobs=True, top_logprobs=2, stream=True, **_greedy())
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def test_async_client_chat_and_completion(server):
    async def run():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        whole, stream = await asyncio.gather(
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, **_greedy()),
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, stream=True, **_greedy()))
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        completion = await client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, **_greedy())
        await client.close()
        return whole, text, completion

    whole, text, completion = asyncio.run(run())
    assert text == whole.choices[0].message.content
    assert completion.usage.completion_tokens == 3


def test_metrics_use_vllm_names(server, client):
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, **_greedy())
    text = httpx.get(server.url + "/metrics").text
    label = f'{{model_name="{MODEL}"}}'
    for name in ("vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count",
                 "vllm:request_time_per_output_token_seconds_count", "vllm:e2e_request_latency_seconds_count",
                 "vllm:request_queue_time_seconds_count", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:num_preemptions_total", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total"):
        assert f"{name}{label}" in text, name
    assert f'vllm:request_success_total{{finished_reason="length",model_name="{MODEL}"}}' in text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("vllm:")}
    stats = engine_stats(server.ctx)
    assert values[f"vllm:generation_tokens_total{label}"] == stats.generation_tokens
    assert values[f"vllm:num_requests_running{label}"] == 0
