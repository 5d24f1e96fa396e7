"""One vector store's index: live upserts and deletes beside lock-free searches, durable on disk.

Rows live in an append-only arena; a row's label is its position and is never reused (an upsert of an existing
chunk appends a new row and clears the old row's alive bit). Rows past the last sealed segment form the growing
buffer, searched exactly; a maintenance thread seals the buffer into an HNSW segment once it holds `seal_rows`
rows and merges segments of one size tier (segments.py). Why searches never wait on a writer:

- writers take `_write_lock` (one at a time, which also fixes the log order); searches take no lock at all;
- rows, postings and bits are only ever appended or flipped past what a reader already holds: a writer fills a
  row, then publishes the new length (growable.py); a reader uses the lengths it read;
- a sealed HNSW graph is immutable; sealing and merging build a new one off to the side and publish it with one
  reference swap (`_view`), so no thread ever mutates a graph that a search may be walking.

Durability: every write is appended to the WAL and fsynced before it is applied or acknowledged (wal.py);
`snapshot()` persists the state and drops the logs it covers; `open` loads the snapshot and replays the rest.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from llmfleet.apps.retrieval.codes import OPEN, Codes
from llmfleet.apps.retrieval.growable import Bitmap, GrowableArray
from llmfleet.apps.retrieval.maintenance import Maintainer
from llmfleet.apps.retrieval.planner import plan_search
from llmfleet.apps.retrieval.restore import restore_columns
from llmfleet.apps.retrieval.params import IndexParams
from llmfleet.apps.retrieval.segments import Segment
from llmfleet.apps.retrieval.snapshot import read_snapshot, write_snapshot
from llmfleet.apps.retrieval.types import Chunk, Hit, Reader, SearchStats, acl_principals
from llmfleet.apps.retrieval.wal import WriteAheadLog, replay, wal_numbers


@dataclass(frozen=True, slots=True)
class View:
    """What searches read of the sealed part: the segments and where the growing buffer starts."""
    segments: tuple[Segment, ...]
    sealed: int


class Collection:
    """A store's chunks. `path=None` keeps it in memory only (nothing survives the process)."""

    def __init__(self, dim: int, path: str | None = None, params: IndexParams | None = None):
        if dim < 1:
            raise ValueError(f"dim: must be >= 1, got {dim}")
        self.dim, self.path, self.params = dim, path, params or IndexParams()
        self._write_lock = threading.Lock()
        self._vectors = GrowableArray((dim,), np.float32)
        self._team = GrowableArray((), np.int32)
        self._doc = GrowableArray((), np.int32)
        self._alive = Bitmap()
        self._chunk_ids: list[str] = []
        self._texts: list[str] = []
        self.teams, self.docs, self.principals = Codes(), Codes(), Codes()
        self._doc_acl: dict[int, tuple[int, ...]] = {}        # doc code -> principal codes (empty: OPEN)
        self._postings: dict[tuple[int, int], GrowableArray] = {}
        self._label_of: dict[str, int] = {}
        self._doc_labels: dict[int, list[int]] = {}
        self.deleted = 0
        self._has_acl = False
        self._view = View((), 0)
        self._wal: WriteAheadLog | None = None
        if path is not None:
            os.makedirs(path, exist_ok=True)
            self._recover()
        self._maintainer = Maintainer(self)

    # ---- writes -------------------------------------------------------------------------------------------
    def upsert(self, chunks: list[Chunk]) -> None:
        """Insert or replace chunks (by id); visible to searches and durable when this returns."""
        if not chunks:
            return
        vectors = np.stack([np.asarray(c.vector, dtype=np.float32).reshape(-1) for c in chunks])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vector: {self.dim} dimensions expected, got {vectors.shape[1]}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise ValueError("vector: must be finite and non-zero")
        vectors /= norms
        with self._write_lock:
            if self._wal is not None:
                self._wal.append([{"op": "u", "c": [_chunk_record(c, v) for c, v in zip(chunks, vectors)]}])
            self._apply_upsert(chunks, vectors)
        self._maintainer.poke()

    def delete(self, chunk_ids: list[str]) -> int:
        """Delete chunks by id; gone from searches and durable on return. Returns how many existed."""
        with self._write_lock:
            if self._wal is not None:
                self._wal.append([{"op": "d", "ids": list(chunk_ids)}])
            return self._apply_delete(chunk_ids)

    def delete_doc(self, doc: str) -> int:
        """Delete every chunk of document `doc`; returns how many there were."""
        with self._write_lock:
            code = self.docs.get(doc)
            ids = [self._chunk_ids[i] for i in self._doc_labels.get(code, ())] if code is not None else []
            live = [i for i in ids if i in self._label_of]
            if self._wal is not None and live:
                self._wal.append([{"op": "d", "ids": live}])
            return self._apply_delete(live)

    def _apply_upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        start = len(self._vectors)
        labels = np.arange(start, start + len(chunks), dtype=np.int64)
        teams = np.array([self.teams.add(c.team) for c in chunks], dtype=np.int32)
        docs = np.array([self._doc_code(c) for c in chunks], dtype=np.int32)
        self._chunk_ids.extend(c.id for c in chunks)
        self._texts.extend(c.text for c in chunks)
        self._team.append(teams)
        self._doc.append(docs)
        self._vectors.append(vectors)          # rows before anything that points at them
        self._alive.set(labels, True)
        for label, team, doc in zip(labels.tolist(), teams.tolist(), docs.tolist()):
            for principal in self._doc_acl[doc] or (OPEN,):
                self._posting(team, principal).append(np.array([label], dtype=np.int64))
            self._doc_labels.setdefault(doc, []).append(label)
        replaced = [self._label_of[c.id] for c in chunks if c.id in self._label_of]
        for chunk, label in zip(chunks, labels.tolist()):
            self._label_of[chunk.id] = label
        self._clear(replaced)

    def _apply_delete(self, chunk_ids: list[str]) -> int:
        labels = [self._label_of.pop(i) for i in chunk_ids if i in self._label_of]
        self._clear(labels)
        return len(labels)

    def _clear(self, labels: list[int]) -> None:
        if labels:
            self._alive.set(np.array(labels, dtype=np.int64), False)
            self.deleted += len(labels)

    def _doc_code(self, chunk: Chunk) -> int:
        code = self.docs.add(chunk.doc)
        acl = tuple(self.principals.add(p) for p in acl_principals(chunk.users, chunk.groups))
        self._doc_acl[code] = acl      # a document's ACL is the one its latest chunk carries
        return code

    def _posting(self, team: int, principal: int) -> GrowableArray:
        posting = self._postings.get((team, principal))
        if posting is None:
            posting = self._postings[(team, principal)] = GrowableArray((), np.int64, 64)
            self._has_acl = self._has_acl or principal != OPEN
        return posting

    # ---- reads --------------------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, reader: Reader | None, docs: frozenset[str] | None = None,
               stats: list[SearchStats] | None = None) -> list[Hit]:
        """The k chunks nearest to `query` that `reader` may see (and of `docs` when given), best first."""
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if len(query) != self.dim:
            raise ValueError(f"query: {self.dim} dimensions expected, got {len(query)}")
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("query: must be finite and non-zero")
        scores, labels, how = plan_search(self, query / norm, k, reader, docs)
        if stats is not None:
            stats.append(how)
        hits, seen = [], set()
        for score, label in zip(scores.tolist(), labels.tolist()):
            chunk_id = self._chunk_ids[label]
            if chunk_id not in seen:
                seen.add(chunk_id)
                hits.append(Hit(chunk_id, self.docs.names[self._doc.data[label]], score, self._texts[label]))
        return hits

    def search_all(self, query: np.ndarray, k: int, stats: list[SearchStats] | None = None) -> list[Hit]:
        """Search every team's chunks: for administration and benchmarks only, never served to a tenant."""
        return self.search(query, k, None, None, stats)

    def count(self) -> int:
        return len(self._label_of)

    @contextlib.contextmanager
    def bulk_load(self):
        """Hold sealing back during a large load, so its rows are built into one graph afterwards."""
        with self._maintainer.paused():
            yield
        self._maintainer.poke()

    def wait_built(self) -> None:
        """Block until every due seal and merge has been built."""
        self._maintainer.wait_idle()

    def visible_candidates(self, reader: Reader, docs: frozenset[str] | None) -> np.ndarray | None:
        """Labels of the live chunks `reader` may see (None: every live chunk, no filter needed)."""
        if reader is None:
            return None
        team = self.teams.get(reader.team)
        if team is None:
            return np.empty(0, np.int64)
        if docs is None and len(self.teams) == 1 and not self._has_acl:
            return None
        lists = [self._postings[key].view() for key in [(team, OPEN)] + [
            (team, code) for code in map(self.principals.get, reader.principals()) if code is not None]
            if key in self._postings]
        if not lists:
            return np.empty(0, np.int64)
        labels = lists[0] if len(lists) == 1 else np.unique(np.concatenate(lists))
        if docs is not None:
            codes = [c for c in map(self.docs.get, docs) if c is not None]
            labels = labels[np.isin(self._doc.data[labels], codes)]
        return labels[self._alive.test(labels)]

    # ---- state shared with the planner and the maintainer -------------------------------------------------
    @property
    def view(self) -> View:
        return self._view

    def publish(self, view: View) -> None:
        self._view = view

    def rows(self) -> np.ndarray:
        return self._vectors.view()

    def vectors_at(self, labels: np.ndarray) -> np.ndarray:
        """The rows of `labels` (labels a reader obtained before calling: their rows are already written)."""
        return self._vectors.data[labels]

    @property
    def alive(self) -> Bitmap:
        return self._alive

    # ---- persistence --------------------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Persist the current state and drop the logs it covers (writes wait only while columns are copied)."""
        if self.path is None:
            return
        with self._maintainer.paused():
            with self._write_lock:
                number = self._wal.number + 1
                self._wal.close()
                self._wal = WriteAheadLog(self.path, number)
                state = self._capture()
            write_snapshot(self.path, number, state, self._view.segments)

    def _capture(self) -> dict:
        n = len(self._vectors)
        return {"vectors": self._vectors.view()[:n], "team": self._team.view()[:n].copy(),
                "doc": self._doc.view()[:n].copy(), "alive": self._alive.bytes[:(n + 7) // 8].copy(),
                "meta": {"dim": self.dim, "chunk_ids": self._chunk_ids[:n], "texts": self._texts[:n],
                         "teams": list(self.teams.names), "docs": list(self.docs.names),
                         "principals": list(self.principals.names),
                         "doc_acl": [[d, list(a)] for d, a in self._doc_acl.items()]}}

    def _recover(self) -> None:
        loaded = read_snapshot(self.path)
        first = 0
        if loaded is not None:
            first, state, segments = loaded
            self._restore(state)
            self._view = View(tuple(segments), segments[-1].stop if segments else 0)
        numbers = [n for n in wal_numbers(self.path) if n >= first]
        for number in numbers:
            for record in replay(self.path, number):
                self._redo(record)
        self._wal = WriteAheadLog(self.path, (numbers[-1] + 1) if numbers else max(first, 1))

    def _redo(self, record: dict) -> None:
        if record["op"] == "u":
            chunks = [Chunk(i, np.frombuffer(v, np.float32), t, d, x, tuple(u), tuple(g))
                      for i, v, t, d, x, u, g in record["c"]]
            self._apply_upsert(chunks, np.stack([c.vector for c in chunks]))
        elif record["op"] == "d":
            self._apply_delete(record["ids"])

    def _restore(self, state: dict) -> None:
        restore_columns(self, state)

    def close(self) -> None:
        """Stop the maintenance thread and close the log (every acknowledged write is already durable)."""
        self._maintainer.stop()
        if self._wal is not None:
            self._wal.close()


def _chunk_record(chunk: Chunk, vector: np.ndarray) -> list:
    return [chunk.id, vector.tobytes(), chunk.team, chunk.doc, chunk.text, list(chunk.users), list(chunk.groups)]
