"""Sealed segments: an HNSW graph (faiss IndexHNSWFlat, inner product) over a contiguous range of labels.

A segment is immutable once built: searches read it from any number of threads without a lock (faiss' HNSW
search is read-only and releases the GIL); merging builds a new segment and swaps it in. Ranges start at
multiples of 8 so a segment's slice of a label bitmap is a byte slice for faiss' IDSelectorBitmap.
"""
from __future__ import annotations

import faiss
import numpy as np

from llmfleet.apps.retrieval.params import IndexParams


class Segment:
    """An HNSW graph over labels [start, stop) (all rows, deleted ones included: the alive bitmap hides them)."""

    def __init__(self, start: int, stop: int, index: faiss.Index):
        if start % 8:
            raise ValueError(f"segment start: must be a multiple of 8, got {start}")
        self.start, self.stop, self.index = start, stop, index

    @property
    def size(self) -> int:
        return self.stop - self.start

    @classmethod
    def build(cls, vectors: np.ndarray, start: int, params: IndexParams) -> "Segment":
        """An HNSW graph over `vectors` (rows start.. of the collection), built with the library's threads."""
        index = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        if params.build_threads:
            faiss.omp_set_num_threads(params.build_threads)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(start, start + len(vectors), index)

    def search(self, query: np.ndarray, k: int, ef: int, bitmap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of the k best rows whose bit is set in `bitmap` (collection-wide layout; None: all)."""
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        if bitmap is not None:
            piece = bitmap[self.start // 8:(self.stop + 7) // 8]
            if not piece.any():
                return np.empty(0, np.float32), np.empty(0, np.int64)
            piece = np.ascontiguousarray(piece)
            selector = faiss.IDSelectorBitmap(len(piece), faiss.swig_ptr(piece))
            params.sel = selector
        scores, ids = self.index.search(query.reshape(1, -1), k, params=params)
        found = ids[0] >= 0
        return scores[0][found], ids[0][found] + self.start

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    @classmethod
    def load(cls, path: str, start: int, stop: int) -> "Segment":
        index = faiss.read_index(path)
        if index.ntotal != stop - start:
            raise ValueError(f"{path}: holds {index.ntotal} vectors, the snapshot says {stop - start}")
        return cls(start, stop, index)


def exact_search(vectors: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the k best of `vectors` (rows labelled `labels`) by inner product."""
    if len(labels) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores = vectors @ query
    if len(scores) > k:
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(len(scores))
    return scores[top], labels[top]
