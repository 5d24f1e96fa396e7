"""Workload generators (exact, deterministic), result records, the latency summary, and `llmfleet bench serve`
end to end against a real server on loopback."""
from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from llmfleet.bench.results import slug, write_result
from llmfleet.bench.serve import RequestResult, percentiles, summarize
from llmfleet.bench.workloads import VOCAB_LIMIT, workload
from llmfleet.entrypoints.cli import main
from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig


def _first_mixed_request() -> tuple[int, int, list[int]]:
    rng = random.Random(0)
    input_len, output_len = rng.randint(100, 1024), rng.randint(100, 1024)
    return input_len, output_len, [rng.randrange(VOCAB_LIMIT) for _ in range(input_len)]


@pytest.mark.parametrize("name, count, input_len, output_len", [
    ("W0", 1, 128, 512), ("W2", 256, 512, 256), ("W4", 256, 2176, 128), ("W6", 16, 32768, 256)])
def test_fixed_length_workloads(name, count, input_len, output_len):
    requests = workload(name)
    assert len(requests) == count
    assert {len(r.prompt_token_ids) for r in requests} == {input_len}
    assert {r.max_tokens for r in requests} == {output_len}
    assert all(0 <= t < VOCAB_LIMIT for r in requests[:4] for t in r.prompt_token_ids)
    first = random.Random(0)
    assert requests[0].prompt_token_ids[:8] == [first.randrange(VOCAB_LIMIT) for _ in range(8)]


def test_mixed_workloads_follow_the_draw_order():
    w1, w3 = workload("W1"), workload("w3")
    input_len, output_len, ids = _first_mixed_request()
    assert (len(w1[0].prompt_token_ids), w1[0].max_tokens, w1[0].prompt_token_ids) == (input_len, output_len, ids)
    assert len(w1) == 256 and len(w3) == 1000 and w3[:256] == w1
    assert all(100 <= len(r.prompt_token_ids) <= 1024 and 100 <= r.max_tokens <= 1024 for r in w3)
    assert workload("W3", 5) == w3[:5] and workload("W1") == w1  # deterministic


def test_shared_prefix_and_multi_turn_structure():
    w4 = workload("W4")
    assert all(r.prompt_token_ids[:2048] == w4[0].prompt_token_ids[:2048] for r in w4)
    assert len({tuple(r.prompt_token_ids[2048:]) for r in w4}) == 256
    w5 = workload("W5")
    assert len(w5) == 64 * 8 and {r.max_tokens for r in w5} == {200}
    for before, after in zip(w5, w5[1:]):
        if after.conversation == before.conversation:
            assert after.turn == before.turn + 1
            assert len(after.prompt_token_ids) == len(before.prompt_token_ids) + 400
            assert after.prompt_token_ids[:len(before.prompt_token_ids)] == before.prompt_token_ids
        else:
            assert (after.conversation, after.turn, len(after.prompt_token_ids)) == (before.conversation + 1, 0, 200)


def test_unknown_workload_is_a_clear_error():
    with pytest.raises(ValueError, match="workload"):
        workload("W9")


def test_write_result_adds_provenance(tmp_path):
    record = {"workload": "W3", "shape": "qwen3-0.6b", "runs": []}
    path = write_result(record, "serve", tmp_path)
    data = json.loads(path.read_text())
    assert path.parent == tmp_path / slug(data["device"])
    assert path.name.startswith("serve-w3-qwen3-0.6b-") and path.suffix == ".json"
    assert {"command", "commit", "device", "date", "kind"} <= set(data) and data["runs"] == []
    assert write_result(dict(record), "serve", tmp_path) != path  # same second: a distinct file
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_summary_figures_are_exact():
    assert percentiles([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(
        {"mean": 300.0, "p50": 300.0, "p90": 460.0, "p99": 496.0})
    fast = RequestResult(True, 10, output_tokens=11, ttft=0.2, latency=0.6, itl=[0.04] * 10)
    slow = RequestResult(True, 20, output_tokens=5, ttft=0.7, latency=0.9, itl=[0.05] * 4)
    failed = RequestResult(False, 30, error="HTTP 429")
    summary = summarize([fast, slow, failed], duration=2.0, rate=4.0)
    assert (summary["completed"], summary["failed"], summary["errors"]) == (2, 1, ["HTTP 429"])
    assert summary["output_throughput"] == 8.0 and summary["total_token_throughput"] == 23.0
    assert summary["goodput"] == 0.5 and summary["goodput_fraction"] == pytest.approx(1 / 3)  # slow misses TTFT
    assert summary["tpot_ms"]["p50"] == pytest.approx(45.0)  # (40 + 50) / 2
    assert summary["ttft_ms"]["mean"] == pytest.approx(450.0)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    # A vocabulary of 10000 so that the workloads' ids fit; long enough for W5's third turn.
    checkpoint = tiny_checkpoint("llama", vocab_size=VOCAB_LIMIT, max_position_embeddings=2048)
    config = EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=512)
    app = create_app(ServerConfig(served_model_names=("tiny",)), config)
    with BackgroundServer(app) as url:
        yield SimpleNamespace(url=url)


def _only_result(tmp_path) -> dict:
    (path,) = list(tmp_path.rglob("serve-*.json"))
    return json.loads(path.read_text())


def test_bench_serve_w3_end_to_end(server, tmp_path):
    code = main(["bench", "serve", "--url", server.url, "--workload", "W3", "--rate", "inf,40", "--num-requests",
                 "6", "--max-input-tokens", "48", "--max-output-tokens", "5", "--results-dir", str(tmp_path)])
    assert code == 0
    data = _only_result(tmp_path)
    assert (data["workload"], data["shape"], data["model"], data["num_requests"]) == ("W3", "tiny", "tiny", 6)
    assert [run["rate"] for run in data["runs"]] == ["inf", 40.0]
    for run in data["runs"]:
        assert run["completed"] == 6 and run["failed"] == 0 and run["output_tokens"] == 30
        assert run["prompt_tokens"] == 6 * 48
        assert 0 < run["ttft_ms"]["p50"] <= run["ttft_ms"]["p99"] and run["itl_ms"]["p50"] > 0
        assert run["request_throughput"] == pytest.approx(6 / run["duration_s"])


def test_bench_serve_w5_reports_ttft_per_turn(server, tmp_path):
    code = main(["bench", "serve", "--url", server.url, "--workload", "W5", "--rate", "inf", "--num-requests", "3",
                 "--max-output-tokens", "2", "--results-dir", str(tmp_path)])
    assert code == 0
    (run,) = _only_result(tmp_path)["runs"]
    assert run["completed"] == 3 and run["prompt_tokens"] == 200 + 600 + 1000
    assert sorted(run["ttft_ms_by_turn"]) == ["0", "1", "2"]


def test_bench_serve_counts_failures(server, tmp_path):
    code = main(["bench", "serve", "--url", server.url, "--workload", "W3", "--rate", "inf", "--num-requests", "2",
                 "--max-output-tokens", "2", "--model", "missing", "--no-save"])
    assert code == 1
