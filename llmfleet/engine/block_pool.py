"""The pool of KV blocks: reference counts, an LRU free list, and the prefix-cache map from block hash to block.

Every block is in exactly one of three states:
  owned   ref_count > 0, not in the free list (it may also be cached, i.e. carry a hash, and be shared);
  cached  ref_count == 0, in the free list, still carrying its hash: reusable by a prefix hit until evicted;
  free    ref_count == 0, in the free list, no hash.
Blocks are handed out from the front of the free list (least recently freed first); a cached block handed out
loses its hash then, and only then (lazy eviction).
`events`, when set (llmfleet.engine.kv_events), hears every hash entering and leaving the cache map.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_kv_blocks: must be >= 1, got {num_blocks}")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in self.blocks)
        self._cached: dict[bytes, Block] = {}
        self.events = None   # KVEventRecorder: stored(hash, parent) / removed(hash) / cleared()

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now: free plus cached-but-unused."""
        return len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def lookup(self, block_hash: bytes) -> Block | None:
        return self._cached.get(block_hash)

    def allocate(self, count: int) -> list[Block]:
        """Hands out `count` blocks with ref_count 1, evicting cached ones LRU. Caller checks num_free_blocks."""
        if count > len(self._free):
            raise RuntimeError(f"asked for {count} KV blocks with {len(self._free)} free")
        blocks = []
        for _ in range(count):
            _, block = self._free.popitem(last=False)
            self._evict(block)
            block.ref_count = 1
            blocks.append(block)
        return blocks

    def touch(self, blocks: list[Block]) -> None:
        """Takes a reference on blocks found by a prefix hit (reviving cached free blocks)."""
        for block in blocks:
            if block.ref_count == 0:
                del self._free[block.block_id]
            block.ref_count += 1

    def release(self, blocks: list[Block]) -> None:
        """Drops one reference each; blocks reaching zero join the free list's tail (most recently freed)."""
        for block in blocks:
            if block.ref_count <= 0:
                raise RuntimeError(f"KV block {block.block_id} released with ref_count {block.ref_count}")
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = block

    def cache(self, block: Block, block_hash: bytes, parent_hash: bytes | None = None) -> None:
        """Publishes a full block under its chain hash; an existing entry for that hash wins (no duplicates)."""
        if block.block_hash is None and block_hash not in self._cached:
            block.block_hash = block_hash
            self._cached[block_hash] = block
            if self.events is not None:
                self.events.stored(block_hash, parent_hash)

    def uncache(self, block: Block) -> None:
        self._evict(block)

    def reset_cache(self) -> int:
        """Forgets every cached prefix; returns how many entries were dropped."""
        count = len(self._cached)
        for block in list(self._cached.values()):
            self._evict(block)
        if self.events is not None:
            self.events.cleared()
        return count

    def _evict(self, block: Block) -> None:
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) is block:
                del self._cached[block.block_hash]
                if self.events is not None:
                    self.events.removed(block.block_hash)
            block.block_hash = None

    def check_invariants(self) -> None:
        """Every block is owned xor in the free list; the cache map points at blocks carrying that hash."""
        for block in self.blocks:
            in_free = block.block_id in self._free
            assert block.ref_count >= 0, block
            assert in_free == (block.ref_count == 0), block
        for block_hash, block in self._cached.items():
            assert block.block_hash == block_hash, block
