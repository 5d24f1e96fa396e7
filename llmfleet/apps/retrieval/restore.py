"""Rebuilding a collection's in-memory columns and postings from a snapshot's arrays."""
from __future__ import annotations

import numpy as np

from llmfleet.apps.retrieval.codes import OPEN, Codes


def restore_columns(coll, state: dict) -> None:
    """Fill an empty `coll` (a Collection) from `state` as snapshot.read_snapshot returned it."""
    meta = state["meta"]
    if meta["dim"] != coll.dim:
        raise ValueError(f"dim: the snapshot holds {meta['dim']}-dimensional vectors, {coll.dim} expected")
    coll.teams, coll.docs, coll.principals = Codes(meta["teams"]), Codes(meta["docs"]), Codes(meta["principals"])
    coll._doc_acl = {d: tuple(a) for d, a in meta["doc_acl"]}
    coll._chunk_ids, coll._texts = list(meta["chunk_ids"]), list(meta["texts"])
    n = len(coll._chunk_ids)
    coll._vectors.append(state["vectors"])
    coll._team.append(state["team"])
    coll._doc.append(state["doc"])
    coll._alive.reserve(n)
    coll._alive.bytes[:len(state["alive"])] = state["alive"]
    alive = coll._alive.test(np.arange(n))
    coll.deleted = int(n - alive.sum())
    labels = np.flatnonzero(alive)
    coll._label_of = dict(zip((coll._chunk_ids[i] for i in labels.tolist()), labels.tolist()))
    _rebuild_postings(coll, state["team"], state["doc"], n)


def _rebuild_postings(coll, teams: np.ndarray, docs: np.ndarray, n: int) -> None:
    """Postings (team, principal) -> labels and doc -> labels, grouped with numpy rather than per row."""
    order = np.lexsort((np.arange(n), docs, teams))
    keys = np.stack([teams[order], docs[order]], axis=1)
    bounds = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    for group in np.split(order.astype(np.int64), bounds):
        if len(group) == 0:
            continue
        team, doc = int(teams[group[0]]), int(docs[group[0]])
        coll._doc_labels.setdefault(doc, []).extend(group.tolist())
        for principal in coll._doc_acl.get(doc) or (OPEN,):
            coll._posting(team, principal).append(group)
    for posting in coll._postings.values():   # labels ascending, as appends would have left them
        data = np.sort(posting.view())
        posting.data[:len(data)] = data
    for labels in coll._doc_labels.values():
        labels.sort()
