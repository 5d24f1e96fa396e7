"""A collection's HNSW and search-routing settings (no faiss import: configs and flags use it)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IndexParams:
    """HNSW and routing settings of a collection (defaults measured in docs/retrieval.md)."""
    m: int = 32                        # graph degree (level 0 holds 2M links)
    ef_construction: int = 64
    ef_search: int = 64                # unfiltered searches
    ef_search_max: int = 1024          # cap of the selectivity-scaled ef of filtered searches
    exact_below: int = 4096            # a reader seeing fewer chunks than this is always searched exactly
    exact_by_cost: bool = True         # above exact_below too, wherever exact search is the cheaper (False: the
    #                                    threshold alone decides, e.g. to exercise the filtered HNSW route)
    seal_rows: int = 8192              # the growing buffer is sealed into an HNSW segment at this many rows
    merge_factor: int = 4              # this many segments of one size tier are merged into one
    build_threads: int = 0             # faiss (OpenMP) threads for building; 0: the library's default

    def __post_init__(self) -> None:
        for name in ("m", "ef_construction", "ef_search", "ef_search_max", "exact_below", "seal_rows",
                     "merge_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.seal_rows % 8:
            raise ValueError(f"seal_rows: must be a multiple of 8, got {self.seal_rows}")
        if self.merge_factor < 2:
            raise ValueError(f"merge_factor: must be >= 2, got {self.merge_factor}")

    def filtered_ef(self, k: int, selectivity: float) -> int:
        """ef for a bitmap-filtered HNSW search: the graph walk keeps ~ef results that pass the filter only when
        it visits about ef / selectivity nodes, so ef is scaled up by the filter's selectivity (capped)."""
        base = max(self.ef_search, k)
        return int(min(self.ef_search_max, max(base, math.ceil(base / max(selectivity, 1e-6)))))

    def exact_cheaper(self, visible: int, total: int, k: int) -> bool:
        """Whether exact search over `visible` of `total` rows beats a filtered HNSW walk. The walk computes about
        2m distances per expanded node and expands ~ef nodes, ef scaled by the filter's selectivity; exact search
        computes one distance per visible row. Below `exact_below` rows exact search is chosen regardless."""
        if visible < self.exact_below:
            return True
        return self.exact_by_cost and visible <= 2 * self.m * self.filtered_ef(k, visible / max(total, 1))

