"""The batch API end to end with the official openai client against a real server (tiny checkpoint): upload, create,
poll, results in OpenAI's JSONL shapes, errors, invalid inputs, cancel (every KV block freed), a restart that
resumes an unfinished batch, and the offline `llmfleet run-batch`."""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from llmfleet.protocol.config import EngineConfig
from llmfleet.server.app import create_app
from llmfleet.server.background import BackgroundServer
from llmfleet.server.config import ServerConfig

try:
    from serving import engine_stats, wait_until
except ImportError:
    from tests.serving import engine_stats, wait_until

PROMPTS = ["Hello, world", "one, two, three", "The quick brown fox"]


def _engine_config(checkpoint) -> EngineConfig:
    return EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=128, max_model_len=256)


def _serve(checkpoint, batch_dir, concurrency: int = 8):
    holder = {}
    app = create_app(ServerConfig(served_model_names=("tiny",), batch_dir=str(batch_dir),
                                  batch_concurrency=concurrency),
                     _engine_config(checkpoint), on_ready=lambda ctx: holder.update(ctx=ctx))
    server = BackgroundServer(app)
    url = server.start()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    return server, SimpleNamespace(url=url, ctx=holder["ctx"], client=client)


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    server, handle = _serve(tiny_checkpoint("llama"), tmp_path_factory.mktemp("batches"))
    yield handle
    server.stop()


def _line(custom_id: str, url: str, body: dict) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _completion(prompt: str, max_tokens: int = 5) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


def _upload(client, lines: list[str]):
    return client.files.create(file=("in.jsonl", io.BytesIO(("\n".join(lines) + "\n").encode())), purpose="batch")


def _wait(client, batch_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 120):
    holder = {}
    assert wait_until(lambda: holder.update(b=client.batches.retrieve(batch_id)) or holder["b"].status in statuses,
                      timeout, poll=0.1), holder.get("b")
    return holder["b"]


def _results(client, file_id: str) -> dict[str, dict]:
    lines = client.files.content(file_id).text.splitlines()
    return {r["custom_id"]: r for r in map(json.loads, lines)}


def _all_blocks_free(ctx) -> bool:
    stats = engine_stats(ctx)
    return stats.num_free_blocks == stats.num_total_blocks and stats.num_running == stats.num_waiting == 0


def test_batch_end_to_end_matches_direct_requests(served):
    client = served.client
    lines = [_line(f"req-{i}", "/v1/completions", _completion(p)) for i, p in enumerate(PROMPTS)]
    lines.append(_line("bad", "/v1/completions", {**_completion("x"), "max_tokens": -1}))
    uploaded = _upload(client, lines)
    assert uploaded.purpose == "batch" and uploaded.bytes > 0 and uploaded.filename == "in.jsonl"
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h",
                                  metadata={"job": "test"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "test"}
    done = _wait(client, batch.id)
    assert done.status == "completed" and done.completed_at and done.in_progress_at
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 3, 1)
    outputs = _results(client, done.output_file_id)
    assert sorted(outputs) == ["req-0", "req-1", "req-2"]
    for i, prompt in enumerate(PROMPTS):
        body = _completion(prompt)
        extra = {"ignore_eos": body.pop("ignore_eos")}
        direct = client.completions.create(**body, extra_body=extra)
        result = outputs[f"req-{i}"]
        assert result["error"] is None and result["response"]["status_code"] == 200
        assert result["response"]["body"]["choices"][0]["text"] == direct.choices[0].text
        assert result["response"]["body"]["usage"]["completion_tokens"] == 5
    errors = _results(client, done.error_file_id)
    assert errors["bad"]["response"]["status_code"] == 400
    assert errors["bad"]["response"]["body"]["error"]["param"] == "max_tokens"
    assert done.id in [b.id for b in client.batches.list().data]
    assert uploaded.id in [f.id for f in client.files.list().data]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert _all_blocks_free(served.ctx)


def test_batch_of_chat_and_embeddings(served):
    client = served.client
    chat = [_line(f"c{i}", "/v1/chat/completions", {"model": "tiny", "max_tokens": 3, "temperature": 0,
                                                      "messages": [{"role": "user", "content": p}]})
            for i, p in enumerate(PROMPTS)]
    done = _wait(client, client.batches.create(input_file_id=_upload(client, chat).id,
                                               endpoint="/v1/chat/completions", completion_window="24h").id)
    bodies = [r["response"]["body"] for r in _results(client, done.output_file_id).values()]
    assert done.request_counts.completed == 3 and all(b["object"] == "chat.completion" for b in bodies)
    embed = [_line(f"e{i}", "/v1/embeddings", {"model": "tiny", "input": p}) for i, p in enumerate(PROMPTS)]
    done = _wait(client, client.batches.create(input_file_id=_upload(client, embed).id,
                                               endpoint="/v1/embeddings", completion_window="24h").id)
    results = _results(client, done.output_file_id)
    assert done.request_counts.completed == 3 and len(results["e0"]["response"]["body"]["data"][0]["embedding"]) == 64


def test_invalid_input_file_fails_the_batch_with_line_errors(served):
    client = served.client
    lines = [_line("a", "/v1/completions", _completion("hi")), "not json",
             _line("a", "/v1/completions", _completion("hi")), _line("b", "/v1/chat/completions", {})]
    done = _wait(client, client.batches.create(input_file_id=_upload(client, lines).id, endpoint="/v1/completions",
                                               completion_window="24h").id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert [(e.code, e.line) for e in done.errors.data] == [("invalid_json", 2), ("duplicate_custom_id", 3),
                                                              ("invalid_url", 4)]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=_upload(client, lines[:1]).id, endpoint="/v1/responses",
                              completion_window="24h")


def test_cancel_stops_the_batch_and_frees_every_block(served):
    client = served.client
    lines = [_line(f"r{i}", "/v1/completions", _completion(PROMPTS[i % 3] + f" {i}", 150)) for i in range(40)]
    batch = client.batches.create(input_file_id=_upload(client, lines).id, endpoint="/v1/completions",
                                  completion_window="24h")
    _wait(client, batch.id, ("in_progress",))
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = _wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.request_counts.completed < 40
    assert wait_until(lambda: _all_blocks_free(served.ctx), 30)
    short = [_line("one", "/v1/completions", _completion("hi", 2))]
    finished = _wait(client, client.batches.create(input_file_id=_upload(client, short).id,
                                                   endpoint="/v1/completions", completion_window="24h").id)
    with pytest.raises(openai.ConflictError):   # a completed batch cannot be cancelled
        client.batches.cancel(finished.id)


def test_unfinished_batch_resumes_after_a_restart(tiny_checkpoint, tmp_path):
    checkpoint = tiny_checkpoint("llama")
    lines = [_line(f"r{i}", "/v1/completions", _completion(PROMPTS[i % 3] + f" {i}", 24)) for i in range(12)]
    server, handle = _serve(checkpoint, tmp_path, concurrency=1)
    try:
        batch = handle.client.batches.create(input_file_id=_upload(handle.client, lines).id,
                                             endpoint="/v1/completions", completion_window="24h")
        assert wait_until(lambda: handle.client.batches.retrieve(batch.id).request_counts.completed >= 1, 60)
    finally:
        server.stop()
    stopped = asyncio.run(_stored_batch(tmp_path, batch.id))
    assert stopped["status"] == "in_progress" and 1 <= stopped["request_counts"]["completed"] < 12
    server, handle = _serve(checkpoint, tmp_path, concurrency=8)
    try:
        done = _wait(handle.client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 12
        results = handle.client.files.content(done.output_file_id).text.splitlines()
        assert sorted(json.loads(r)["custom_id"] for r in results) == sorted(f"r{i}" for i in range(12))
    finally:
        server.stop()


async def _stored_batch(folder, batch_id: str) -> dict:
    from llmfleet.server.batches.store import BatchStore
    store = await BatchStore.open(folder)
    try:
        return await store.get_batch(batch_id)
    finally:
        await store.close()


def test_run_batch_cli(tiny_checkpoint, tmp_path):
    requests = tmp_path / "requests.jsonl"
    lines = [_line(f"c{i}", "/v1/completions", _completion(p, 4)) for i, p in enumerate(PROMPTS)]
    lines += [_line("e0", "/v1/embeddings", {"model": "tiny", "input": PROMPTS[0]}), "{broken"]
    requests.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "llmfleet", "run-batch", "-i", str(requests), "-o", str(out),
                           "--model", str(tiny_checkpoint("llama")), "--served-model-name", "tiny", "--device",
                           "cpu", "--dtype", "float32", "--num-kv-blocks", "64", "--max-model-len", "256"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 1, proc.stderr   # the broken line fails
    assert "requests: 100%" in proc.stderr and "4 succeeded, 1 failed" in proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ["c0", "c1", "c2", "e0", None]
    assert all(r["response"]["status_code"] == 200 for r in results[:4])
    assert results[0]["response"]["body"]["usage"]["completion_tokens"] == 4
    assert results[4]["response"] is None and results[4]["error"]["code"] == "invalid_json"
