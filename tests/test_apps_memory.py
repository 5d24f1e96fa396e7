"""Conversation memory: the history builder's exact choices (recent window, summary, recall, budget), the store
keeping tenants apart (property-based, SQLite; and on a real PostgreSQL), and the Conversations API plus
`conversation` on chat requests behind real tenancy, with summaries, token counts and embeddings from a real
`llmfleet serve` of a tiny model, persisted across a restart."""
from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.apps.memory.config import MemoryConfig
from llmfleet.apps.memory.context import RECALL_INTRO, SUMMARY_INTRO, build_history
from llmfleet.apps.memory.middleware import ConversationMiddleware
from llmfleet.apps.memory.store import ConversationStore, NewItem
from llmfleet.server.background import BackgroundServer
from llmfleet.tenancy import TenancyMiddleware

try:
    from apps_helpers import EchoApp, served
    from tenancy_app import MASTER, tenancy_config
except ImportError:  # tests/ imported as a package
    from tests.apps_helpers import EchoApp, served
    from tests.tenancy_app import MASTER, tenancy_config


def _row(seq: int, tokens: int, vector=None, role: str = "user") -> dict:
    return {"seq": seq, "role": role, "text": f"turn {seq}", "tokens": tokens,
            "embedding": None if vector is None else np.asarray(vector, np.float32).tobytes()}


def test_history_keeps_recent_turns_the_summary_and_the_most_similar_older_turn():
    rows = [_row(s, 10, [1.0, 0.0] if s == 3 else [0.0, 1.0]) for s in range(1, 21)]
    history = build_history(rows, "they met in May", 8, np.array([1.0, 0.0], np.float32), budget=100,
                            recent_share=0.5, recall_count=1)
    assert history.recent == [16, 17, 18, 19, 20] and history.recalled == [3]
    assert history.messages[0] == {"role": "system", "content": SUMMARY_INTRO + "they met in May"}
    assert history.messages[-1] == {"role": "system", "content": RECALL_INTRO + "user: turn 3"}
    assert [m["content"] for m in history.messages[1:-1]] == [f"turn {s}" for s in range(16, 21)]
    assert history.tokens == 50 + 8 + 4 + 16 + 10 <= 100


def test_history_never_exceeds_its_budget():
    rows = [_row(s, 7 + s % 5, [np.cos(s), np.sin(s)]) for s in range(1, 60)]
    for budget in (5, 20, 64, 200):
        history = build_history(rows, "x" * 40, 30, np.array([1.0, 0.0], np.float32), budget, 0.6, 3)
        assert history.tokens <= budget
        assert sum(r["tokens"] for r in rows if r["seq"] in history.recent) <= int(budget * 0.6)


TENANTS = st.sampled_from(["team:a", "team:b", "key:k1", "admin", ""])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(TENANTS, st.text(min_size=1, max_size=30)), min_size=1, max_size=8), TENANTS)
def test_a_tenant_never_reads_another_tenants_conversations(tmp_path_factory, writes, reader):
    db = tmp_path_factory.mktemp("conv-prop") / "c.db"

    async def run() -> None:
        store = await ConversationStore.open(f"sqlite:///{db}")
        try:
            made = []
            for tenant, text in writes:
                conversation = await store.create(tenant, {})
                await store.add(tenant, conversation["id"], [NewItem("user", text, {"type": "message"}, 3)])
                made.append((tenant, conversation["id"]))
            for tenant, conversation_id in made:
                visible = await store.get(reader, conversation_id)
                items = await store.items(reader, conversation_id)
                assert (visible is not None) == (tenant == reader) and bool(items) == (tenant == reader)
                if tenant != reader:
                    assert await store.add(reader, conversation_id, [NewItem("user", "x", {}, 1)]) is None
                    assert not await store.delete(reader, conversation_id)
        finally:
            await store.close()

    asyncio.run(run())


def test_the_store_on_postgresql(postgres_url):
    async def run() -> None:
        store = await ConversationStore.open(postgres_url)
        try:
            conversation = await store.create("team:pg", {"topic": "x"})
            rows = await store.add("team:pg", conversation["id"], [NewItem("user", f"t{i}", {}, 2) for i in range(3)])
            assert [r["seq"] for r in rows] == [1, 2, 3]
            assert [r["text"] for r in await store.items("team:pg", conversation["id"], descending=True)] == [
                "t2", "t1", "t0"]
            assert await store.get("team:other", conversation["id"]) is None
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def tiny_server(tiny_checkpoint):
    proc = served(tiny_checkpoint("llama"))
    try:
        yield proc.wait_ready(300).url
    finally:
        proc.kill()


class Conversations:
    """EchoApp behind conversation memory behind real tenancy (SQLite at `db`), two keys of two teams."""

    def __init__(self, tiny_url: str, db, keys=None, budget: int = 120):
        self.upstream = EchoApp()
        config = MemoryConfig(base_url=tiny_url, summary_model="tiny", embedding_model="tiny", token_budget=budget,
                              summary_every=2, summary_max_tokens=8)
        memory = ConversationMiddleware(self.upstream, config, database_url=f"sqlite:///{db}")
        self.server = BackgroundServer(TenancyMiddleware(memory, tenancy_config(f"sqlite:///{db}")))
        self.keys = keys

    def __enter__(self):
        self.url = self.server.start()
        if self.keys is None:
            admin = {"authorization": f"Bearer {MASTER}"}
            self.keys = [httpx.post(self.url + "/key/generate", json={"team_id": None}, headers=admin).json()["key"]
                         for _ in range(2)]
        return self

    def __exit__(self, *exc):
        self.server.stop()

    def call(self, method: str, path: str, key: int = 0, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"authorization": f"Bearer {self.keys[key]}"},
                             timeout=120, **kw)


def test_the_conversations_api_and_tenants(tiny_server, tmp_path):
    with Conversations(tiny_server, tmp_path / "db.sqlite") as conv:
        made = conv.call("POST", "/v1/conversations", json={"metadata": {"topic": "demo"}, "items": [
            {"type": "message", "role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "hi there"}]}]})
        assert made.status_code == 200, made.text
        cid = made.json()["id"]
        assert made.json()["object"] == "conversation" and made.json()["metadata"] == {"topic": "demo"}
        added = conv.call("POST", f"/v1/conversations/{cid}/items",
                          json={"items": [{"role": "user", "content": "third"}]}).json()
        listed = conv.call("GET", f"/v1/conversations/{cid}/items?order=asc&limit=2").json()
        assert [i["content"][0]["text"] for i in listed["data"]] == ["hello", "hi there"] and listed["has_more"]
        rest = conv.call("GET", f"/v1/conversations/{cid}/items?order=asc&after={listed['last_id']}").json()
        assert [i["id"] for i in rest["data"]] == [added["data"][0]["id"]] and not rest["has_more"]
        assert listed["data"][1]["content"][0]["type"] == "output_text"
        for method, path in (("GET", ""), ("GET", "/items"), ("DELETE", ""),
                             ("GET", f"/items/{listed['first_id']}"), ("POST", "/items")):
            other = conv.call(method, f"/v1/conversations/{cid}{path}", key=1,
                              json={"items": [{"role": "user", "content": "x"}]} if method == "POST" else None)
            assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        chat = conv.call("POST", "/v1/chat/completions", key=1,
                         json={"model": "m", "conversation": cid, "messages": [{"role": "user", "content": "x"}]})
        assert chat.status_code == 404 and chat.json()["error"]["param"] == "conversation"
        bad = conv.call("POST", "/v1/conversations", json={"items": [{"role": "robot", "content": "x"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "items.0.role"
        assert conv.call("DELETE", f"/v1/conversations/{cid}/items/{listed['first_id']}").status_code == 200
        assert conv.call("DELETE", f"/v1/conversations/{cid}").json()["deleted"]
        assert conv.call("GET", f"/v1/conversations/{cid}").status_code == 404


def test_chat_turns_stay_within_budget_are_summarized_and_survive_a_restart(tiny_server, tmp_path):
    db = tmp_path / "db.sqlite"
    with Conversations(tiny_server, db) as conv:
        cid = conv.call("POST", "/v1/conversations", json={}).json()["id"]
        for turn in range(8):
            answer = conv.call("POST", "/v1/chat/completions", json={
                "model": "m", "conversation": cid, "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": f"turn {turn}: the quick brown fox jumps over the lazy dog"}]})
            assert answer.status_code == 200, answer.text
            assert int(answer.headers["x-llmfleet-conversation-tokens"]) <= 120
            sent = conv.upstream.bodies[-1]["messages"]
            assert sent[0] == {"role": "system", "content": "be brief"}
            assert "conversation" not in conv.upstream.bodies[-1]
            assert sent[-1]["content"].startswith(f"turn {turn}:")
        assert any(m["content"].startswith(SUMMARY_INTRO) for m in sent)  # older turns were summarized
        keys = conv.keys
    with Conversations(tiny_server, db, keys) as again:  # a new process's view: the same database
        items = again.call("GET", f"/v1/conversations/{cid}/items?order=asc&limit=100").json()["data"]
        assert len(items) == 16 and items[-1]["role"] == "assistant"
        assert items[-1]["content"][0]["text"].startswith("echo: turn 7:")
