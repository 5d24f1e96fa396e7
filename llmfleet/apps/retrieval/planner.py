"""How a search runs, given what the reader may see.

- the reader may see everything (one team, no ACLs, no attribute filter): every HNSW segment with its plain ef,
  deleted rows hidden by the alive bitmap when there are any;
- the reader sees few chunks (a small tenant, a narrow ACL or filter): exact search over just those rows. HNSW
  with a selective filter walks a graph whose neighbours mostly fail the filter: it needs ef ~ 1 / selectivity
  to keep its recall, so below a cardinality threshold exact search is both exact and cheaper (the usual
  remedy, as in Qdrant's full-scan threshold and Milvus' brute-force fallback). The threshold is the point where
  the two cost the same number of distance computations (IndexParams.exact_cheaper), never below
  `exact_below`;
- otherwise: HNSW with the reader's bitmap inside the graph walk (faiss IDSelectorBitmap, tested in C++ on each
  candidate), ef scaled by 1 / selectivity so the walk still gathers ef admissible results.

The growing buffer (rows past the last sealed segment) is always searched exactly under the same filter.
"""
from __future__ import annotations

import numpy as np

from llmfleet.apps.retrieval.growable import pack_labels
from llmfleet.apps.retrieval.segments import exact_search
from llmfleet.apps.retrieval.types import Reader, SearchStats


def plan_search(coll, query: np.ndarray, k: int, reader: Reader, docs: frozenset[str] | None):
    """(scores, labels, SearchStats) of the k best chunks of `coll` that `reader` may see."""
    view = coll.view                      # the sealed part first, then the rows: rows only ever grow past it
    candidates = coll.visible_candidates(reader, docs)
    rows = coll.rows()
    if candidates is not None and coll.params.exact_cheaper(len(candidates), len(rows), k):
        scores, labels = exact_search(coll.vectors_at(candidates), candidates, query, k)
        return (*_best(scores, labels, k), SearchStats("exact", len(candidates)))
    if candidates is None:
        bitmap = coll.alive.bytes if coll.deleted else None
        ef, route, count = max(coll.params.ef_search, k), "all", -1
    else:
        bitmap = pack_labels(candidates, len(rows))
        ef = coll.params.filtered_ef(k, len(candidates) / max(len(rows), 1))
        route, count = "filtered", len(candidates)
    parts = [seg.search(query, k, ef, bitmap) for seg in view.segments]
    parts.append(_search_buffer(rows, view.sealed, query, k, bitmap, coll))
    scores = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return (*_best(scores, labels, k), SearchStats(route, count, ef))


def _search_buffer(rows: np.ndarray, start: int, query: np.ndarray, k: int, bitmap, coll):
    """Exact search over the unsealed rows [start, len(rows)) that pass `bitmap` (or are alive)."""
    stop = len(rows)
    if stop <= start:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    if bitmap is None:
        mask = coll.alive.range_mask(start, stop)
    else:
        bits = np.unpackbits(bitmap[start // 8:(stop + 7) // 8], bitorder="little")[:stop - start]
        mask = np.zeros(stop - start, dtype=bool)
        mask[:len(bits)] = bits.astype(bool)
    labels = np.flatnonzero(mask).astype(np.int64) + start
    return exact_search(rows[labels], labels, query, k)


def _best(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], labels[order]
