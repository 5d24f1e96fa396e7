"""KV-cache manager: which blocks each sequence owns, and prefix caching by chain-hashed full blocks.

The manager speaks only of sequences, token ids and block ids; the scheduler never touches a Block's fields.
Block tables are append-only while a sequence runs; `free` returns every block it holds.

A full block's hash covers (parent block's hash, the block's token ids, an optional salt such as a tenant or
adapter id), so equal hashes mean equal whole prefixes. Blocks are published in the cache when they are allocated
for tokens whose ids are known; within one step the runner writes every token's KV before any attention reads it,
so a sequence admitted later in the same step may already share them. Blocks of a sequence that are freed before
their tokens were computed (preemption in the step that allocated them) are unpublished.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.engine.block_pool import Block, BlockPool
from llmfleet.engine.request import Request
from llmfleet.protocol.block_hash import hash_block


class KVCacheBlocks:
    """An opaque handle on some blocks (a prefix hit, or blocks just allocated): the scheduler passes it back to
    the manager and may read its block ids, nothing else. Always truthy, even when empty: only None means "does
    not fit"."""
    __slots__ = ("_blocks",)

    def __init__(self, blocks: list[Block]):
        self._blocks = blocks

    @property
    def block_ids(self) -> list[int]:
        return [b.block_id for b in self._blocks]


@dataclass(slots=True)
class PrefixCacheStats:
    queries: int = 0   # prompt tokens looked up
    hits: int = 0      # of those, tokens found cached


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True):
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        self._blocks: dict[int, list[Block]] = {}        # seq_id -> its block table
        self._ids: dict[int, list[int]] = {}             # seq_id -> the same table as block ids
        self._hashes: dict[int, list[bytes]] = {}        # seq_id -> hashes of its full blocks so far
        self._published: dict[int, int] = {}             # seq_id -> how many of its blocks are published

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return 1.0 - self.pool.num_free_blocks / self.pool.num_blocks

    def block_ids(self, seq: Request) -> list[int]:
        """The sequence's block table as ids: a live, append-only list (callers must not modify it)."""
        return self._ids.get(seq.seq_id, [])

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_blocks(self, seq: Request) -> tuple[KVCacheBlocks, int]:
        """Longest cached prefix of a sequence being admitted: (blocks, tokens). Leaves >= 1 token to compute,
        since the last prompt token must run to produce logits."""
        if not self._caching(seq):
            return KVCacheBlocks([]), 0
        hashes = self._full_block_hashes(seq)
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hit: list[Block] = []
        for block_hash in hashes[:max_blocks]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hit.append(block)
        return KVCacheBlocks(hit), len(hit) * self.block_size

    def allocate_slots(self, seq: Request, num_new_tokens: int, computed: KVCacheBlocks | None = None,
                       num_lookahead_tokens: int = 0) -> KVCacheBlocks | None:
        """Makes the sequence own blocks for num_computed_tokens (+ prefix hit) + num_new_tokens tokens, plus
        `num_lookahead_tokens` slots after them.

        `computed` is the prefix hit of a sequence being admitted (its num_computed_tokens is 0 then). Returns the
        blocks appended to its table (the hit first), or None, changing nothing, when the free blocks do not
        suffice.
        """
        hit = computed._blocks if computed is not None else []
        num_computed = seq.num_computed_tokens + len(hit) * self.block_size
        total = num_computed + num_new_tokens + num_lookahead_tokens
        table = self._blocks.get(seq.seq_id)
        if not hit and table is not None and total <= len(table) * self.block_size:
            # fast path: a running sequence whose blocks already have room (most decodes)
            if self._caching(seq):
                self._publish(seq, table, num_computed + num_new_tokens)
            return KVCacheBlocks([])
        owned = table or []
        needed = self.blocks_needed(total) - len(owned) - len(hit)
        revived = sum(1 for b in hit if b.ref_count == 0)  # cached free blocks a hit takes out of the pool
        if needed + revived > self.pool.num_free_blocks:
            return None
        if seq.seq_id not in self._blocks and self.enable_caching and seq.pooling is None:  # admission: a query
            self.stats.queries += seq.num_tokens
            self.stats.hits += len(hit) * self.block_size
        self.pool.touch(hit)
        table = self._blocks.setdefault(seq.seq_id, owned)
        ids = self._ids.setdefault(seq.seq_id, [])
        new_blocks = hit + (self.pool.allocate(needed) if needed > 0 else [])
        table.extend(new_blocks)
        ids.extend(b.block_id for b in new_blocks)
        if self._caching(seq):
            self._publish(seq, table, num_computed + num_new_tokens)  # never the lookahead slots
        return KVCacheBlocks(new_blocks)

    def free(self, seq: Request) -> None:
        """Returns all the sequence's blocks, tail first so that shared prefix blocks are evicted last."""
        table = self._blocks.pop(seq.seq_id, [])
        self._ids.pop(seq.seq_id, None)
        self._hashes.pop(seq.seq_id, None)
        self._published.pop(seq.seq_id, None)
        first_uncomputed = seq.num_computed_tokens // self.block_size
        for block in table[first_uncomputed:]:
            if block.ref_count == 1:
                self.pool.uncache(block)  # published but never written: must not serve a later hit
        self.pool.release(table[::-1])

    def reset_prefix_cache(self) -> int:
        return self.pool.reset_cache()

    def _caching(self, seq: Request) -> bool:
        """Whether the sequence's full blocks are published and looked up: always with prefix caching on; with it
        off, only within a salt namespace (the samples of one n > 1 request share their prompt that way). Pooling
        requests never are: they must compute every token (mean pooling, encoders' bidirectional attention)."""
        return (self.enable_caching or bool(seq.cache_salt)) and seq.pooling is None

    def _publish(self, seq: Request, table: list[Block], num_tokens: int) -> None:
        """Publishes the sequence's newly full blocks (those before are published already)."""
        full = num_tokens // self.block_size
        done = self._published.get(seq.seq_id, 0)
        if full <= done:
            return
        hashes = self._full_block_hashes(seq)
        ready = min(full, len(hashes))   # a block holding a pending token is published once its id is known
        for i in range(done, ready):
            self.pool.cache(table[i], hashes[i], hashes[i - 1] if i else None)
        self._published[seq.seq_id] = ready

    def _full_block_hashes(self, seq: Request) -> list[bytes]:
        """Chain hashes of the sequence's full blocks, extended incrementally as its tokens grow."""
        hashes = self._hashes.setdefault(seq.seq_id, [])
        tokens, size = seq.all_token_ids, self.block_size
        for i in range(len(hashes), len(tokens) // size):   # known ids only: pending ones are not in the list
            hashes.append(hash_block(hashes[-1] if hashes else None, tokens[i * size:(i + 1) * size], seq.cache_salt))
        return hashes
