"""The embedded index (faiss HNSW collection) and the Qdrant adapter behind one interface: a chunk is found the
moment its upsert returns and gone the moment its delete returns, on every search route (exact, filtered HNSW,
unfiltered HNSW, the growing buffer); searches keep finding every live chunk while segments are sealed and
merged; snapshot + log replay restore the state; and no reader ever sees another team's chunks or a document
its ACL keeps from it (hypothesis over random teams, documents and ACLs, on both backends)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient

from llmfleet.apps.retrieval.collection import Collection
from llmfleet.apps.retrieval.params import IndexParams
from llmfleet.apps.retrieval.qdrant import QdrantBackend
from llmfleet.apps.retrieval.types import Chunk, Reader, SearchStats
from llmfleet.apps.retrieval.wal import wal_numbers, wal_path

DIM = 16
SMALL = IndexParams(m=8, ef_construction=32, ef_search=32, exact_below=1, exact_by_cost=False, seal_rows=64,
                    merge_factor=2)


def unit(rng, n=1):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def route_of(coll, query, reader, docs=None) -> str:
    stats: list[SearchStats] = []
    coll.search(query, 5, reader, docs, stats)
    return stats[0].route


@pytest.mark.parametrize("exact_below", [1, 10_000])
def test_upsert_is_found_at_once_and_delete_removes_it_at_once(tmp_path, exact_below):
    rng = np.random.default_rng(0)
    coll = Collection(DIM, str(tmp_path), IndexParams(m=8, seal_rows=64, merge_factor=2, exact_below=exact_below,
                                                          exact_by_cost=False))
    base = unit(rng, 300)
    coll.upsert([Chunk(f"c{i}", base[i], f"t{i % 2}", f"d{i}") for i in range(300)])
    coll.wait_built()                        # 296 rows sealed, 4 in the buffer
    assert coll.view.sealed == 296
    routes = set()
    for i in (5, 298, 100):                  # a sealed row, a buffer row, a sealed row
        who = Reader(f"t{i % 2}")
        assert coll.search(base[i], 1, who)[0].chunk_id == f"c{i}"
        routes.add(route_of(coll, base[i], who))
        assert coll.delete([f"c{i}"]) == 1
        assert all(h.chunk_id != f"c{i}" for h in coll.search(base[i], 10, who))
        fresh = unit(rng)[0]
        coll.upsert([Chunk(f"new{i}", fresh, f"t{i % 2}", "dn")])
        assert coll.search(fresh, 1, who)[0].chunk_id == f"new{i}"
    assert routes == ({"filtered"} if exact_below == 1 else {"exact"})
    coll.close()


def test_upsert_replaces_a_chunk_and_delete_doc_removes_all_its_chunks():
    rng = np.random.default_rng(1)
    coll = Collection(DIM, None, SMALL)
    a, b = unit(rng, 2)
    coll.upsert([Chunk("x", a, "t", "doc1", "old"), Chunk("y", a, "t", "doc1"), Chunk("z", b, "t", "doc2")])
    coll.upsert([Chunk("x", b, "t", "doc1", "new")])
    hits = coll.search(b, 3, Reader("t"))
    assert [h.chunk_id for h in hits if h.chunk_id == "x"] == ["x"] and hits[0].text in ("new", "")
    assert {h.chunk_id for h in hits} == {"x", "y", "z"}
    assert coll.delete_doc("doc1") == 2
    assert [h.chunk_id for h in coll.search(a, 3, Reader("t"))] == ["z"]
    assert coll.count() == 1
    coll.close()


def test_unfiltered_route_for_a_single_team_store_hides_deleted_rows():
    rng = np.random.default_rng(2)
    coll = Collection(DIM, None, SMALL)
    base = unit(rng, 200)
    coll.upsert([Chunk(f"c{i}", base[i], "only", "d") for i in range(200)])
    coll.wait_built()
    assert route_of(coll, base[3], Reader("only")) == "all"
    coll.delete(["c3"])
    assert "c3" not in {h.chunk_id for h in coll.search(base[3], 20, Reader("only"))}
    assert coll.search(base[3], 5, Reader("other")) == []
    coll.close()


def test_searches_find_every_live_chunk_while_segments_are_sealed_and_merged():
    rng = np.random.default_rng(3)
    coll = Collection(DIM, None, IndexParams(m=8, seal_rows=64, merge_factor=2, exact_below=1, exact_by_cost=False))
    probes = unit(rng, 20)
    coll.upsert([Chunk(f"p{i}", probes[i], "t", "d") for i in range(20)])
    misses, stop = [], threading.Event()

    def search_forever():
        while not stop.is_set():
            for i in range(20):
                hits = coll.search(probes[i], 1, Reader("t"))
                if not hits or hits[0].chunk_id != f"p{i}":
                    misses.append(i)

    reader = threading.Thread(target=search_forever)
    reader.start()
    for batch in range(30):                    # 30 x 40 rows: seals every 64 rows and several tiers of merges
        coll.upsert([Chunk(f"f{batch}-{j}", v, "t", "d") for j, v in enumerate(unit(rng, 40))])
    coll.wait_built()
    stop.set()
    reader.join()
    assert misses == []
    assert len(coll.view.segments) < 1220 // 64 and coll.view.sealed >= 1220 - 64
    coll.close()


def test_snapshot_then_log_replay_restores_every_write(tmp_path):
    rng = np.random.default_rng(4)
    vectors = unit(rng, 400)
    coll = Collection(DIM, str(tmp_path), SMALL)
    coll.upsert([Chunk(f"c{i}", vectors[i], f"t{i % 3}", f"d{i % 5}", f"text {i}", users=("ann",) if i % 5 == 0
                       else ()) for i in range(300)])
    coll.wait_built()
    coll.snapshot()
    coll.delete([f"c{i}" for i in range(0, 300, 7)])
    coll.upsert([Chunk(f"c{i}", vectors[i], f"t{i % 3}", f"d{i % 5}", f"text {i}") for i in range(300, 400)])
    expected = {(t, u): _visible(coll, vectors, Reader(t, u)) for t in ("t0", "t1", "t2") for u in (None, "ann")}
    coll.close()
    reopened = Collection(DIM, str(tmp_path), SMALL)
    assert reopened.count() == 400 - len(range(0, 300, 7))
    for (team, user), seen in expected.items():
        assert _visible(reopened, vectors, Reader(team, user)) == seen
    assert reopened.search(vectors[301], 1, Reader("t1"))[0].text == "text 301"
    reopened.close()


def test_a_torn_log_tail_is_cut_and_the_rest_replayed(tmp_path):
    rng = np.random.default_rng(5)
    coll = Collection(DIM, str(tmp_path), SMALL)
    vectors = unit(rng, 3)
    for i in range(3):
        coll.upsert([Chunk(f"c{i}", vectors[i], "t", "d")])
    coll.close()
    path = wal_path(str(tmp_path), wal_numbers(str(tmp_path))[-1])
    with open(path, "ab") as file:
        file.write(b"\x40\x00\x00\x00garbage")  # a record header promising 64 bytes, never completed
    reopened = Collection(DIM, str(tmp_path), SMALL)
    assert reopened.count() == 3
    reopened.upsert([Chunk("c3", unit(rng)[0], "t", "d")])
    reopened.close()
    assert Collection(DIM, str(tmp_path), SMALL).count() == 4


def _visible(coll, vectors, reader) -> list[str]:
    return sorted(h.chunk_id for h in coll.search(vectors[0], 1000, reader))


# ---- tenant isolation, property-based, on both backends -------------------------------------------------------
TEAMS, USERS, GROUPS = ["a", "b", "c"], ["u1", "u2", "u3"], ["g1", "g2"]
docs_strategy = st.lists(st.tuples(st.sampled_from(TEAMS), st.lists(st.sampled_from(USERS), max_size=2, unique=True),
                                   st.lists(st.sampled_from(GROUPS), max_size=1, unique=True),
                                   st.integers(1, 4)), min_size=1, max_size=12)
readers_strategy = st.lists(st.tuples(st.sampled_from(TEAMS + ["nobody"]), st.sampled_from(USERS + [None]),
                                      st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
                            min_size=1, max_size=4)


def may_read(reader: Reader, team: str, users: list[str], groups: list[str]) -> bool:
    return team == reader.team and ((not users and not groups) or reader.user in users
                                    or bool(set(groups) & set(reader.groups)))


@pytest.mark.parametrize("backend", ["faiss-exact", "faiss-hnsw", "qdrant"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=docs_strategy, readers=readers_strategy, seed=st.integers(0, 2**16))
def test_no_reader_ever_sees_another_teams_or_an_acl_barred_chunk(backend, docs, readers, seed):
    rng = np.random.default_rng(seed)
    if backend == "qdrant":
        store = QdrantBackend(QdrantClient(":memory:"), "vs", DIM)
    else:
        params = IndexParams(m=8, seal_rows=8, merge_factor=2, exact_by_cost=False,
                             exact_below=10_000 if backend == "faiss-exact" else 1)
        store = Collection(DIM, None, params)
    chunks, owner = [], {}
    for d, (team, users, groups, n) in enumerate(docs):
        for j in range(n):
            chunks.append(Chunk(f"d{d}-{j}", unit(rng)[0], team, f"d{d}", users=tuple(users), groups=tuple(groups)))
            owner[f"d{d}-{j}"] = (team, users, groups)
    store.upsert(chunks)
    if backend != "qdrant":
        store.wait_built()
    for team, user, groups in readers:
        reader = Reader(team, user, tuple(groups))
        allowed = {cid for cid, (t, u, g) in owner.items() if may_read(reader, t, u, g)}
        query = unit(rng)[0]
        hits = {h.chunk_id for h in store.search(query, len(chunks), reader)}
        assert hits <= allowed                               # never a chunk the reader may not read
        if backend != "faiss-hnsw":                          # exact and Qdrant (full scan at this size): all of them
            assert hits == allowed
        one_doc = frozenset({chunks[0].doc})
        assert {h.doc for h in store.search(query, len(chunks), reader, one_doc)} <= one_doc
    store.close()
