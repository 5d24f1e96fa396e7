"""Which replica holds which prefix block: precise from KV events, approximate from the gateway's own routing.

Replicas that publish KV events are tracked exactly (block hash -> replicas, from stored / removed / cleared).
For the others the index remembers where it sent each prompt's blocks, bounded by an LRU capacity (block hashes)
and a TTL, since it never learns what their caches evicted.
"""
from __future__ import annotations

import time
from collections import OrderedDict

from llmfleet.protocol import kv_events as msg


class PrefixIndex:
    def __init__(self, approx_capacity: int = 200_000, approx_ttl_s: float = 600.0):
        self.approx_capacity, self.approx_ttl_s = approx_capacity, approx_ttl_s
        self._precise: dict[bytes, set[str]] = {}           # hash -> replicas reporting it cached
        self._by_replica: dict[str, set[bytes]] = {}         # replica -> its cached hashes (for clear)
        self._approx: OrderedDict[bytes, dict[str, float]] = OrderedDict()  # hash -> {replica: routed at}
        self.precise_replicas: set[str] = set()              # replicas whose events we follow

    # ---- precise: KV events ---------------------------------------------------------------------------------
    def apply(self, url: str, event: msg.KVEvent) -> None:
        if isinstance(event, msg.BlockStored):
            held = self._by_replica.setdefault(url, set())
            for block_hash in event.hashes:
                self._precise.setdefault(block_hash, set()).add(url)
                held.add(block_hash)
        elif isinstance(event, msg.BlockRemoved):
            held = self._by_replica.get(url, set())
            for block_hash in event.hashes:
                self._drop(url, block_hash)
                held.discard(block_hash)
        else:
            self.clear(url)

    def clear(self, url: str) -> None:
        """Forget what `url` caches (an AllBlocksCleared event, a restart, a lost replay)."""
        for block_hash in self._by_replica.pop(url, set()):
            self._drop(url, block_hash)

    def cached_hashes(self, url: str) -> set[bytes]:
        return set(self._by_replica.get(url, ()))

    def _drop(self, url: str, block_hash: bytes) -> None:
        holders = self._precise.get(block_hash)
        if holders is not None:
            holders.discard(url)
            if not holders:
                del self._precise[block_hash]

    # ---- approximate: routing history -----------------------------------------------------------------------
    def record(self, url: str, hashes: list[bytes], now: float | None = None) -> None:
        """`url` was sent a prompt with these blocks (ignored for replicas tracked precisely)."""
        if url in self.precise_replicas:
            return
        now = time.monotonic() if now is None else now
        for block_hash in hashes:
            entry = self._approx.get(block_hash)
            if entry is None:
                entry = self._approx[block_hash] = {}
            else:
                self._approx.move_to_end(block_hash)
            entry[url] = now
        while len(self._approx) > self.approx_capacity:
            self._approx.popitem(last=False)

    # ---- lookups --------------------------------------------------------------------------------------------
    def match(self, hashes: list[bytes], urls: list[str], now: float | None = None) -> dict[str, int]:
        """For each replica, how many leading blocks of `hashes` it holds."""
        now = time.monotonic() if now is None else now
        result = {}
        for url in urls:
            count = 0
            for block_hash in hashes:
                if not self._holds(url, block_hash, now):
                    break
                count += 1
            result[url] = count
        return result

    def _holds(self, url: str, block_hash: bytes, now: float) -> bool:
        if url in self.precise_replicas:
            return url in self._precise.get(block_hash, ())
        routed = self._approx.get(block_hash, {}).get(url)
        return routed is not None and now - routed <= self.approx_ttl_s

    def __len__(self) -> int:
        return len(self._precise) + len(self._approx)
