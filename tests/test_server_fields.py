"""Every request field has its effect, through the official `openai` client (vLLM's fields in extra_body) against a
real server on loopback with a tiny random checkpoint: logit_bias, min_tokens, include_stop_str_in_output, best_of,
echo, continuous usage, chat templates and their options; strict parsing (unknown fields, no coercion) and the
small endpoints (/tokenize, /detokenize, /version, /v1/models/{id}, CORS, HEAD, metric aliases)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

MODEL = "tiny"
# With the qwen2 tiny checkpoint, greedy decoding of this prompt ends with EOS as its second token.
STOPS_EARLY = [5, 77, 123, 9, 300, 41, 8]
EOS = 2


def _server(checkpoint, **config):
    engine = EngineConfig(model=str(checkpoint("qwen2")), device="cpu", dtype="float32", num_kv_blocks=256,
                          max_model_len=256)
    holder = {}
    app = create_app(ServerConfig(served_model_names=(MODEL,), **config), engine,
                     on_ready=lambda ctx: holder.update(ctx=ctx))
    return app, holder


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    app, holder = _server(tiny_checkpoint)
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, tokenizer=holder["ctx"].tokenizer,
                              client=openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60))


def _error(exc_info) -> dict:
    return exc_info.value.body if isinstance(exc_info.value.body, dict) and "message" in exc_info.value.body \
        else exc_info.value.body["error"]


# ------------------------------------------------------------------------------------------------ sampling fields
def test_logit_bias_forces_a_token_and_shows_in_its_logprob(server):
    out = server.client.completions.create(model=MODEL, prompt="Hello", max_tokens=5, temperature=0.7,
                                           logit_bias={"42": 100}, logprobs=1, extra_body={"ignore_eos": True})
    choice = out.choices[0]
    assert choice.text == server.tokenizer.decode([42] * 5)
    assert all(v > -1e-3 for v in choice.logprobs.token_logprobs)  # the bias is applied before the logprobs
    banned = server.client.completions.create(model=MODEL, prompt=STOPS_EARLY, max_tokens=6, temperature=0,
                                              logit_bias={str(EOS): -100}, extra_body={"ignore_eos": False})
    assert banned.usage.completion_tokens == 6 and banned.choices[0].finish_reason == "length"


def test_min_tokens_holds_back_eos(server):
    free = server.client.completions.create(model=MODEL, prompt=STOPS_EARLY, max_tokens=20, temperature=0)
    assert free.choices[0].finish_reason == "stop" and free.usage.completion_tokens == 2  # stopped by EOS
    held = server.client.completions.create(model=MODEL, prompt=STOPS_EARLY, max_tokens=20, temperature=0,
                                            extra_body={"min_tokens": 6})
    assert held.usage.completion_tokens >= 6


def test_include_stop_str_in_output_keeps_the_stop_string(server):
    kw = dict(model=MODEL, prompt="Hello", max_tokens=30, temperature=0)
    full = server.client.completions.create(**kw, extra_body={"ignore_eos": True}).choices[0].text
    stop = full[8:11]
    cut = server.client.completions.create(**kw, stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    kept = server.client.completions.create(**kw, stop=[stop], extra_body={"ignore_eos": True,
                                                                            "include_stop_str_in_output": True})
    assert cut.text == full[:full.index(stop)]
    assert kept.choices[0].text == cut.text + stop and kept.choices[0].finish_reason == "stop"


def test_best_of_returns_the_samples_of_highest_cumulative_logprob(server):
    kw = dict(model=MODEL, prompt="Once upon", max_tokens=8, temperature=1.0, seed=11,
              extra_body={"ignore_eos": True})
    every = server.client.completions.create(**kw, n=4, logprobs=0)
    score = {c.text: sum(c.logprobs.token_logprobs) for c in every.choices}
    ranked = sorted(score, key=lambda text: -score[text])
    assert len(set(ranked)) == 4
    best = server.client.completions.create(**kw, n=2, best_of=4)
    assert [c.text for c in best.choices] == ranked[:2] and [c.index for c in best.choices] == [0, 1]
    assert best.choices[0].logprobs is None  # asked for by best_of itself, not by the client


def test_echo_puts_the_prompt_first(server):
    out = server.client.completions.create(model=MODEL, prompt=["Hello", "The quick"], max_tokens=4, temperature=0,
                                           echo=True)
    plain = server.client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0)
    assert out.choices[0].text == "Hello" + plain.choices[0].text
    assert out.choices[1].text.startswith("The quick")
    stream = server.client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0, echo=True,
                                              stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == out.choices[0].text


def _reference_logprobs(checkpoint, ids: list[int]) -> torch.Tensor:
    """[len(ids), V]: Hugging Face's log-probabilities after each prompt token, in float32."""
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint("qwen2")), dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].log_softmax(-1)


def test_prompt_logprobs_equal_the_models(server, tiny_checkpoint):
    ids = server.tokenizer.encode("The quick brown fox jumps over the lazy dog")
    ref = _reference_logprobs(tiny_checkpoint, ids)
    out = server.client.completions.create(model=MODEL, prompt=ids, max_tokens=2, temperature=0,
                                           extra_body={"prompt_logprobs": 2})
    entries = out.choices[0].model_extra["prompt_logprobs"]  # a vLLM field: not in the openai client's model
    assert entries[0] is None and len(entries) == len(ids)
    for i in range(1, len(ids)):
        own = entries[i][str(ids[i])]
        assert own["logprob"] == pytest.approx(ref[i - 1, ids[i]].item(), abs=1e-4)
        assert own["rank"] == int((ref[i - 1] > ref[i - 1, ids[i]]).sum()) + 1
        top = ref[i - 1].topk(2).indices.tolist()
        assert set(top) <= {int(t) for t in entries[i]}


def test_echo_with_logprobs_starts_with_the_prompts_tokens(server, tiny_checkpoint):
    ids = server.tokenizer.encode("Hello, world")
    ref = _reference_logprobs(tiny_checkpoint, ids)
    whole = server.client.completions.create(model=MODEL, prompt="Hello, world", max_tokens=3, temperature=0,
                                             echo=True, logprobs=1, extra_body={"ignore_eos": True})
    lp = whole.choices[0].logprobs
    assert len(lp.tokens) == len(ids) + 3 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:len(ids)] == pytest.approx([ref[i - 1, ids[i]].item() for i in range(1, len(ids))],
                                                          abs=1e-4)
    assert lp.text_offset[len(ids)] == len("Hello, world") and lp.text_offset == sorted(lp.text_offset)
    text = whole.choices[0].text
    assert all(text.startswith(token, at) for token, at in zip(lp.tokens, lp.text_offset)
               if token != server.tokenizer.bos_token)
    stream = server.client.completions.create(model=MODEL, prompt="Hello, world", max_tokens=3, temperature=0,
                                              echo=True, logprobs=1, stream=True, extra_body={"ignore_eos": True})
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    assert "".join(c.text for c in chunks) == whole.choices[0].text
    assert sum((c.logprobs.token_logprobs for c in chunks), []) == lp.token_logprobs
    assert sum((c.logprobs.text_offset for c in chunks), []) == lp.text_offset


def test_continuous_usage_stats_in_every_chunk(server):
    stream = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert all(chunk.usage is not None for chunk in chunks)
    completion = [chunk.usage.completion_tokens for chunk in chunks]
    assert completion == sorted(completion) and completion[-1] == 5


def test_suffix_needs_fill_in_the_middle_tokens(server):
    with pytest.raises(openai.BadRequestError) as info:
        server.client.completions.create(model=MODEL, prompt="def f(", suffix="return x", max_tokens=4)
    assert "suffix is not supported by this model" in str(info.value) and _error(info)["param"] == "suffix"


# ------------------------------------------------------------------------------------------------ chat templates
MESSAGES = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "The quick brown"}]


def _tokenize(server, **body) -> list[int]:
    r = httpx.post(server.url + "/tokenize", json=body)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_chat_template_and_its_kwargs_make_the_prompt(server):
    template = "{% for m in messages %}[{{ greeting }}|{{ m['content'] }}]{% endfor %}"
    ids = _tokenize(server, messages=MESSAGES[:1], chat_template=template, chat_template_kwargs={"greeting": "hi"})
    assert ids == server.tokenizer.encode("[hi|Hello]", add_special_tokens=False)
    out = server.client.chat.completions.create(model=MODEL, messages=MESSAGES[:1], max_tokens=2, temperature=0,
                                                extra_body={"chat_template": template,
                                                            "chat_template_kwargs": {"greeting": "hi"}})
    assert out.usage.prompt_tokens == len(ids)


def test_continue_final_message_and_chat_echo(server):
    continued = _tokenize(server, messages=MESSAGES, add_generation_prompt=False, continue_final_message=True)
    assert server.tokenizer.decode(continued).endswith("The quick brown")
    with_prompt = _tokenize(server, messages=MESSAGES, add_generation_prompt=True)
    assert len(with_prompt) > len(continued)
    extra = {"add_generation_prompt": False, "continue_final_message": True, "ignore_eos": True}
    plain = server.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                                  extra_body=extra)
    assert plain.usage.prompt_tokens == len(continued)
    echoed = server.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                                   extra_body={**extra, "echo": True})
    assert echoed.choices[0].message.content == "The quick brown" + plain.choices[0].message.content


# ------------------------------------------------------------------------------------------------ strict requests
@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x", "max_token": 5}, "max_token"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "nmae": "a"}]}, "messages.0.nmae"),
    ("/tokenize", {"prompt": "x", "add_special": True}, "add_special"),
])
def test_unknown_fields_are_named_in_a_400(server, path, body, param):
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"] == f"Unrecognized request argument supplied: {param}"
    assert error["param"] == param and error["code"] == "unrecognized_argument"


def test_unknown_field_through_the_client(server):
    with pytest.raises(openai.BadRequestError) as info:
        server.client.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_body={"max_token": 5})
    assert "Unrecognized request argument supplied: max_token" in str(info.value)


@pytest.mark.parametrize("value", [True, "5", 2.0])
def test_numbers_are_not_coerced(server, value):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": value})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert r.json()["error"]["code"] == "invalid_type"
    missing = httpx.post(server.url + "/v1/completions", json={"max_tokens": 2}).json()["error"]
    assert missing["param"] == "prompt" and missing["code"] == "missing_required_parameter"


def test_lenient_server_ignores_unknown_fields_and_answers_cors(tiny_checkpoint):
    app, _ = _server(tiny_checkpoint, lenient_requests=True, allowed_origins=("https://app.example",))
    with BackgroundServer(app) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "max_token": 5})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        preflight = httpx.options(url + "/v1/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = httpx.options(url + "/v1/chat/completions", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        simple = httpx.get(url + "/v1/models", headers={"Origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"


# ------------------------------------------------------------------------------------------------ small endpoints
def test_tokenize_and_detokenize(server):
    r = httpx.post(server.url + "/tokenize", json={"prompt": "Hello, world", "return_token_strs": True}).json()
    assert r["tokens"] == server.tokenizer.encode("Hello, world") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 256 and r["token_strs"] == server.tokenizer.convert_ids_to_tokens(r["tokens"])
    chat = _tokenize(server, messages=MESSAGES[:1])
    text = server.tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert chat == server.tokenizer.encode(text, add_special_tokens=False)
    back = httpx.post(server.url + "/detokenize", json={"tokens": r["tokens"]}).json()
    assert back == {"prompt": server.tokenizer.decode(r["tokens"])}
    bad = httpx.post(server.url + "/detokenize", json={"tokens": [10**6]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    both = httpx.post(server.url + "/tokenize", json={"prompt": "x", "messages": MESSAGES})
    assert both.status_code == 400


def test_version_model_by_id_head_and_metric_aliases(server):
    assert httpx.get(server.url + "/version").json()["version"]
    card = server.client.models.retrieve(MODEL)
    assert card.id == MODEL
    with pytest.raises(openai.NotFoundError) as info:
        server.client.models.retrieve("nope")
    assert info.value.status_code == 404 and _error(info)["code"] == "model_not_found"
    for path in ("/health", "/ready"):
        head = httpx.head(server.url + path)
        assert head.status_code == 200 and head.content == b""
    server.client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, extra_body={"ignore_eos": True})
    text = httpx.get(server.url + "/metrics").text
    for name in ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc", "vllm:time_per_output_token_seconds_count",
                 "vllm:request_time_per_output_token_seconds_count"):
        assert name in text, name
    counts = [line for line in text.splitlines() if "time_per_output_token_seconds_count" in line]
    assert len({line.rsplit(" ", 1)[1] for line in counts}) == 1, counts  # the alias sees the same observations


def test_openai_error_envelope_is_json(server):
    r = httpx.post(server.url + "/v1/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and json.loads(r.text)["error"]["code"]


def test_fill_in_the_middle_prompt_uses_the_models_fim_tokens(tiny_checkpoint):
    from transformers import AutoTokenizer

    from llmfleet.server.common.prompts import _fim

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint("qwen2")))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>", "<|fim_suffix|>",
                                                                "<|fim_middle|>"]})
    pre, suf, mid = tokenizer.convert_tokens_to_ids(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    prompt = tokenizer.encode("def f(x):")
    [ids] = _fim(tokenizer, [prompt], "    return x")
    body = prompt[1:] if prompt[:1] == [tokenizer.bos_token_id] else prompt
    assert ids == [pre] + body + [suf] + tokenizer.encode("    return x", add_special_tokens=False) + [mid]


def test_chat_prompt_logprobs_are_those_of_the_rendered_prompt(server):
    messages = [{"role": "user", "content": "The quick brown fox"}]
    rendered = httpx.post(server.url + "/tokenize", json={"model": MODEL, "messages": messages}).json()["tokens"]
    chat = server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, temperature=0,
                                                 extra_body={"prompt_logprobs": 1})
    entries = chat.model_extra["prompt_logprobs"]
    plain = server.client.completions.create(model=MODEL, prompt=rendered, max_tokens=2, temperature=0,
                                             extra_body={"prompt_logprobs": 1})
    assert entries == plain.choices[0].model_extra["prompt_logprobs"] and len(entries) == len(rendered)
    with pytest.raises(openai.BadRequestError) as exc:
        server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, stream=True,
                                              extra_body={"prompt_logprobs": 1})
    assert _error(exc)["param"] == "prompt_logprobs"
