"""What crosses the backend interface: chunks going in, readers asking, hits coming out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Chunk:
    """One indexed piece of a document. `users` / `groups` are the document's ACL: when both are empty every
    member of `team` may read it; otherwise only the named users and members of the named groups."""
    id: str
    vector: np.ndarray          # float32 [dim]; normalized by the collection (cosine = inner product)
    team: str
    doc: str                    # the file (document) it came from: ACLs and attribute filters act per document
    text: str = ""
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("chunk.id: must be a non-empty string")
        if not self.team:
            raise ValueError("chunk.team: every chunk belongs to a team")


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is searching: a team member, maybe with a user id and groups (the key's)."""
    team: str
    user: str | None = None
    groups: tuple[str, ...] = ()

    def principals(self) -> tuple[str, ...]:
        """The ACL entries that admit this reader ("u:<user>", "g:<group>")."""
        return ((f"u:{self.user}",) if self.user else ()) + tuple(f"g:{g}" for g in self.groups)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    doc: str
    score: float                # cosine similarity in [-1, 1]
    text: str = ""


@dataclass(frozen=True, slots=True)
class SearchStats:
    """How a search ran (for tests and benchmarks): which route, over how many candidates."""
    route: str                  # "all" (HNSW, no filter but deletions), "filtered" (HNSW + bitmap), "exact"
    candidates: int             # chunks the reader may see (-1: not counted, the whole collection)
    ef_search: int = 0


def acl_principals(users: tuple[str, ...], groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"u:{u}" for u in users) + tuple(f"g:{g}" for g in groups)


class VectorBackend(Protocol):
    """One vector store's chunks. Every method is synchronous and thread-safe; writes are durable on return."""

    def upsert(self, chunks: list[Chunk]) -> None: ...

    def delete(self, chunk_ids: list[str]) -> int: ...

    def delete_doc(self, doc: str) -> int: ...

    def search(self, query: np.ndarray, k: int, reader: Reader, docs: frozenset[str] | None = None) -> list[Hit]:
        """The `k` nearest chunks that `reader` may see, restricted to `docs` when given (the filter acts inside
        the index query, so a reader always gets up to k visible hits, never k hits filtered afterwards)."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...

