"""Encrypted request logs: opt-in per key, PII-masked, AES-GCM sealed (a wrong key or a line moved to another file
fails to open), nothing readable on disk, round-tripped by read_records."""
from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag

from llmfleet.tenancy.request_log import RequestLog, load_key, log_files, read_records

try:
    from tenancy_app import TenantServer, tenancy_config, until
except ImportError:
    from tests.tenancy_app import TenantServer, tenancy_config, until


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reqlog")
    key_file = folder / "log.key"
    key_file.write_text(os.urandom(32).hex())
    config = tenancy_config(f"sqlite:///{folder / 'keys.db'}", request_log_dir=str(folder / "logs"),
                            request_log_key_file=str(key_file))
    with TenantServer(config) as server:
        server.log_dir, server.log_key = folder / "logs", load_key(str(key_file))
        yield server


def _records(server) -> list[dict]:
    return [r for path in log_files(server.log_dir) for r in read_records(path, server.log_key)]


def test_opted_in_key_is_logged_masked_and_sealed(logged):
    key = logged.new_key(metadata={"log_requests": True})
    other = logged.new_key()
    prompt = "my mail is jane.doe@example.com, what is 2+2?"
    assert logged.chat(key, messages=[{"role": "user", "content": prompt}]).status_code == 200
    assert logged.chat(other, messages=[{"role": "user", "content": "not logged"}]).status_code == 200
    assert until(lambda: _records(logged))
    (record,) = _records(logged)
    assert record["request"]["messages"][0]["content"] == "my mail is [EMAIL], what is 2+2?"
    assert record["response"]["choices"][0]["message"]["content"] == "ok" and record["status"] == 200
    assert (record["prompt_tokens"], record["completion_tokens"]) == (10, 5)
    raw = b"".join(p.read_bytes() for p in log_files(logged.log_dir))
    assert b"jane" not in raw and b"2+2" not in raw and b"messages" not in raw


def test_wrong_key_and_moved_lines_fail_to_open(tmp_path):
    key = os.urandom(32)
    log = RequestLog(str(tmp_path), key, max_bytes=1)  # every record opens a new file
    log.write({"n": 1})
    log.write({"n": 2})
    log.close()
    first, second = log_files(tmp_path)
    assert [r["n"] for p in (first, second) for r in read_records(p, key)] == [1, 2]
    with pytest.raises(InvalidTag):
        list(read_records(first, os.urandom(32)))
    second.write_bytes(first.read_bytes())  # a line of the first file, moved into the second
    with pytest.raises(InvalidTag):
        list(read_records(second, key))


def test_key_file_formats(tmp_path):
    key = os.urandom(32)
    for i, content in enumerate((key, key.hex().encode(), __import__("base64").b64encode(key))):
        (tmp_path / str(i)).write_bytes(content)
        assert load_key(str(tmp_path / str(i))) == key
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="request_log_key_file"):
        load_key(str(tmp_path / "short"))


def test_streamed_answer_text_is_logged_and_exported(logged, tmp_path):
    import json

    import pyarrow.parquet as pq

    from llmfleet.entrypoints.cli import main

    key = logged.new_key(metadata={"log_requests": True}, team_id=None)
    key_id = logged.admin("GET", "/key/info", key=key).json()["key_id"]
    answer = logged.chat(key, stream=True, messages=[{"role": "user", "content": "stream please"}])
    assert answer.status_code == 200 and "data: [DONE]" in answer.text
    assert until(lambda: any(r["key_id"] == key_id for r in _records(logged)))
    (streamed,) = [r for r in _records(logged) if r["key_id"] == key_id]
    assert streamed["response"]["choices"] == [{"index": 0, "text": "abc"}]
    key_file = str(tmp_path / "k")
    with open(key_file, "wb") as f:
        f.write(logged.log_key)
    jsonl, parquet = tmp_path / "out.jsonl", tmp_path / "out.parquet"
    common = ["logs", "export", "--log-dir", str(logged.log_dir), "--key-file", key_file, "--since", "1h"]
    assert main(common + ["--key-id", key_id, "-o", str(jsonl)]) == 0
    (row,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert (row["prompt"], row["response"], row["key_id"]) == ("user: stream please", "abc", key_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 5) and row["started_at"].endswith("+00:00")
    assert main(common + ["--format", "parquet", "-o", str(parquet)]) == 0
    table = pq.read_table(parquet).to_pylist()
    assert len(table) == len(_records(logged)) >= 2 and {"ok", "abc"} <= {r["response"] for r in table}
    assert main(common[:4] + ["--key-file", key_file, "--since", "2999-01-01", "-o", str(jsonl)]) == 0
    assert jsonl.read_text() == ""
    (tmp_path / "wrong").write_bytes(os.urandom(32))
    assert main(common[:4] + ["--key-file", str(tmp_path / "wrong"), "-o", str(jsonl)]) == 2
    assert main(common + ["--since", "yesterday-ish", "-o", str(jsonl)]) == 2
