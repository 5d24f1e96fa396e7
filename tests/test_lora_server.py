"""LoRA adapters through the OpenAI server: `--lora-modules` flags, the adapter chosen by the `model` field (its
greedy text equal to the offline engine's under the same adapter), /v1/models listing adapters with their base,
loading and unloading at run time, and 400 / 404 in the error envelope for bad or unknown adapters."""
from __future__ import annotations

import pathlib
import tempfile
from types import SimpleNamespace

import httpx
import pytest

from llmfleet import LLM, SamplingParams
from llmfleet.entrypoints.cli import build_parser
from llmfleet.entrypoints.serve import build_configs
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.lora import LoRARequest
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig
from tests.checkpoints import checkpoint
from tests.lora_adapters import make_adapter

PROMPT = [5, 17, 33, 101, 7, 250, 64, 12]


@pytest.fixture(scope="module")
def adapter_dirs():
    root = pathlib.Path(tempfile.mkdtemp(prefix="lora-server-"))
    base = checkpoint("llama")
    return [make_adapter(base, root / f"a{i}", seed=10 + i, rank=4 * (i + 1)) for i in range(2)]


@pytest.fixture(scope="module")
def server(adapter_dirs):
    config = EngineConfig(model=str(checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=128,
                          max_model_len=256, enable_lora=True, max_loras=2)
    holder = {}
    app = create_app(ServerConfig(served_model_names=("tiny",), lora_modules=(("first", str(adapter_dirs[0])),)),
                     config, on_ready=lambda ctx: holder.update(ctx=ctx))
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url, ctx=holder["ctx"])


def complete(server, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    return httpx.post(server.url + "/v1/completions", json=body, timeout=60)


def offline_text(adapter: pathlib.Path | None) -> str:
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", enable_lora=True, num_kv_blocks=64,
              max_model_len=256)
    lora = LoRARequest("x", 1, str(adapter)) if adapter else None
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    return llm.generate([PROMPT], params, lora_request=lora, use_tqdm=False)[0].outputs[0].text


def test_models_lists_adapters_with_their_base(server, adapter_dirs):
    cards = {c["id"]: c for c in httpx.get(server.url + "/v1/models").json()["data"]}
    assert set(cards) == {"tiny", "first"}
    assert cards["first"]["parent"] == "tiny" and cards["first"]["root"] == str(adapter_dirs[0])
    assert cards["tiny"]["parent"] is None
    assert httpx.get(server.url + "/v1/models/first").json()["parent"] == "tiny"


def test_model_field_selects_the_adapter(server, adapter_dirs):
    by_adapter = complete(server, "first").json()["choices"][0]["text"]
    by_base = complete(server, "tiny").json()["choices"][0]["text"]
    assert by_adapter == offline_text(adapter_dirs[0])
    assert by_base == offline_text(None) and by_base != by_adapter


def test_load_and_unload_at_run_time(server, adapter_dirs):
    url = server.url
    assert complete(server, "second").status_code == 404
    loaded = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": str(adapter_dirs[1])})
    assert loaded.status_code == 200 and loaded.json()["lora_int_id"] == 2
    assert complete(server, "second").json()["choices"][0]["text"] == offline_text(adapter_dirs[1])
    assert "second" in {c["id"] for c in httpx.get(url + "/v1/models").json()["data"]}
    again = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": str(adapter_dirs[1])})
    assert again.status_code == 400 and again.json()["error"]["param"] == "lora_name"
    assert httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "second"}).status_code == 200
    assert complete(server, "second").status_code == 404
    gone = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "second"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


def test_bad_adapter_folders_are_400(server, tmp_path):
    missing = httpx.post(server.url + "/v1/load_lora_adapter",
                         json={"lora_name": "nope", "lora_path": str(tmp_path / "absent")})
    assert missing.status_code == 400
    assert "no adapter_config.json" in missing.json()["error"]["message"]
    (tmp_path / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16, "peft_type": "LORA"}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    malformed = httpx.post(server.url + "/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": str(tmp_path)})
    assert malformed.status_code == 400 and "not a safetensors file" in malformed.json()["error"]["message"]
    assert "bad" not in {c["id"] for c in httpx.get(server.url + "/v1/models").json()["data"]}


def test_serve_flags(adapter_dirs, tmp_path):
    args = build_parser().parse_args(["serve", "--model", str(checkpoint("llama")), "--lora-modules",
                                      f"one={adapter_dirs[0]}", f"two={adapter_dirs[1]}", "--max-loras", "4",
                                      "--max-lora-rank", "32"])
    server_config, engine = build_configs(args)
    assert server_config.lora_modules == (("one", str(adapter_dirs[0])), ("two", str(adapter_dirs[1])))
    assert engine.enable_lora and engine.max_loras == 4 and engine.max_lora_rank == 32
    for bad, message in [(["oops"], "NAME=PATH"), ([f"x={tmp_path}"], "no adapter_config.json"),
                         (["x=/a", "x=/b"], "given twice")]:
        with pytest.raises(ValueError, match=message):
            build_configs(build_parser().parse_args(["serve", "--model", str(checkpoint("llama")),
                                                     "--lora-modules", *bad]))


def test_gateway_routes_adapter_requests_by_their_namespace():
    from llmfleet.gateway.index import PrefixIndex
    from llmfleet.gateway.policies import RoutingRequest
    from llmfleet.gateway.prefix import PrefixAware
    from llmfleet.gateway.replica import CircuitBreaker, Replica
    from llmfleet.protocol import kv_events as msg
    from llmfleet.protocol.block_hash import hash_prefix
    from llmfleet.protocol.lora import lora_salt
    from tests.test_gateway_units import TokenIdHasher

    cards = [{"id": "base"}, {"id": "sql", "parent": "base"}]
    reps = [Replica(f"http://r{i}:1", CircuitBreaker(), healthy=True, cards=cards) for i in range(2)]
    prompt = list(range(100, 165))
    index = PrefixIndex()
    for rep in reps:
        index.precise_replicas.add(rep.url)
    # r0 cached the prompt for the base model, r1 under the adapter (the engine salts adapter blocks by name)
    index.apply(reps[0].url, msg.BlockStored(hash_prefix(prompt, 16)[:4], None, 64))
    index.apply(reps[1].url, msg.BlockStored(hash_prefix(prompt, 16, lora_salt("sql"))[:4], None, 64))
    policy = PrefixAware(index, TokenIdHasher())
    for model, expected in (("sql", reps[1]), ("base", reps[0])):
        request = RoutingRequest("/v1/completions", {"prompt": prompt}, model=model)
        assert policy.choose(request, reps) is expected and request.predicted_cached_tokens == 64


def test_adapter_routes_need_the_master_key_with_tenancy(adapter_dirs, tmp_path):
    from llmfleet.tenancy import TenancyConfig

    master = "sk-master-lora-test"
    tenancy = TenancyConfig(master_key=master, database_url=f"sqlite:///{tmp_path / 'keys.db'}")
    config = EngineConfig(model=str(checkpoint("llama")), device="cpu", dtype="float32", num_kv_blocks=64,
                          max_model_len=128, enable_lora=True)
    with BackgroundServer(create_app(ServerConfig(served_model_names=("tiny",), tenancy=tenancy), config)) as url:
        admin = {"authorization": f"Bearer {master}"}
        key = httpx.post(url + "/key/generate", json={}, headers=admin).json()["key"]
        body = {"lora_name": "first", "lora_path": str(adapter_dirs[0])}
        tenant = httpx.post(url + "/v1/load_lora_adapter", json=body, headers={"authorization": f"Bearer {key}"})
        assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "forbidden"
        assert httpx.post(url + "/v1/load_lora_adapter", json=body).status_code == 401
        assert httpx.post(url + "/v1/load_lora_adapter", json=body, headers=admin).status_code == 200
        unload = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "first"},
                            headers={"authorization": f"Bearer {key}"})
        assert unload.status_code == 403


def test_load_and_unload_under_load_leave_no_blocks_behind(server, adapter_dirs):
    from concurrent.futures import ThreadPoolExecutor

    from tests.serving import engine_stats

    url = server.url
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(complete, server, model) for model in ("first", "tiny") * 4]
        body = {"lora_name": "third", "lora_path": str(adapter_dirs[1])}
        loaded = httpx.post(url + "/v1/load_lora_adapter", json=body)
        answers += [pool.submit(complete, server, "third") for _ in range(3)]
        unloaded = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "third"})
        statuses = [a.result().status_code for a in answers]
    assert loaded.status_code == 200 and unloaded.status_code == 200
    assert statuses[:8] == [200] * 8 and set(statuses[8:]) <= {200, 404}
    stats = engine_stats(server.ctx)
    assert stats.num_running == stats.num_waiting == 0 and stats.num_free_blocks == stats.num_total_blocks
