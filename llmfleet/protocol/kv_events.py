"""Prefix-cache events a replica publishes and the gateway consumes: which block hashes its KV cache holds.

A replica's engine sends one `KVEventBatch` per step that changed its cache, numbered 0, 1, 2, ... without gaps.
A subscriber that sees a number jump asks the replica's replay socket for the batches it missed (`ReplayRequest`)
and gets them back from a bounded buffer, then an empty `ReplayEnd` marking the end of the replay.

Hashes are `llmfleet.protocol.block_hash` chain hashes, so a gateway that hashes a prompt the same way (same block
size, same salt) finds how much of it a replica holds. Messages are msgspec structs encoded as msgpack with a type tag.
"""
from __future__ import annotations

import msgspec


class BlockStored(msgspec.Struct, tag="stored", frozen=True):
    """Consecutive full blocks of one prefix became cached: `hashes` in chain order, the first one's parent hash
    (None at the prompt's start), and how many tokens they hold together."""
    hashes: list[bytes]
    parent_hash: bytes | None
    num_tokens: int


class BlockRemoved(msgspec.Struct, tag="removed", frozen=True):
    """Blocks that left the cache (evicted for reuse, or never written)."""
    hashes: list[bytes]


class AllBlocksCleared(msgspec.Struct, tag="cleared", frozen=True):
    """The whole prefix cache was reset."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, tag="batch", frozen=True):
    """The events of one engine step, in order. `seq` counts batches from 0 on each publisher start."""
    seq: int
    timestamp: float
    events: list[KVEvent]
    block_size: int = 16


class ReplayRequest(msgspec.Struct, tag="replay", frozen=True):
    """Asks for every batch with seq >= `from_seq` that the replica still holds."""
    from_seq: int


class ReplayEnd(msgspec.Struct, tag="replay_end", frozen=True):
    """Ends a replay; `oldest_seq` is the oldest batch still held (> from_seq means some were lost)."""
    oldest_seq: int
    next_seq: int


_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(KVEventBatch | ReplayEnd)
_request_decoder = msgspec.msgpack.Decoder(ReplayRequest)


def encode(message: KVEventBatch | ReplayRequest | ReplayEnd) -> bytes:
    return _encoder.encode(message)


def decode_batch(data: bytes) -> KVEventBatch | ReplayEnd:
    return _batch_decoder.decode(data)


def decode_request(data: bytes) -> ReplayRequest:
    return _request_decoder.decode(data)


def replay_endpoint(endpoint: str) -> str:
    """The replay (ROUTER) socket beside a PUB endpoint: tcp://host:port -> port + 1, ipc://path -> path.replay."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"kv_events_endpoint: expected tcp://host:port, got {endpoint!r}")
        return f"tcp://{host}:{int(port) + 1}"
    if endpoint.startswith("ipc://"):
        return endpoint + ".replay"
    raise ValueError(f"kv_events_endpoint: must start with tcp:// or ipc://, got {endpoint!r}")
