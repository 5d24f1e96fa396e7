"""The replica side of KV events: the block pool records what enters and leaves its prefix cache; once per engine
step `publish_pending()` turns that into one numbered `KVEventBatch` (llmfleet.protocol.kv_events).

Sending happens on a thread of the publisher's own, which owns a PUB socket (every batch, to every subscriber) and a
ROUTER socket answering replay requests from a bounded buffer of recent batches, so the engine step only encodes
and hands bytes over an in-process socket. Self-contained: the engine holds the publisher and calls one method.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time

import zmq

from llmfleet.protocol import kv_events as msg

logger = logging.getLogger(__name__)


class KVEventRecorder:
    """The block pool's sink (engine thread only): stored / removed / cleared, coalesced into events per step."""

    def __init__(self, block_size: int):
        self.block_size = block_size
        self._events: list[msg.KVEvent] = []
        self._chain: list[bytes] | None = None   # hashes of the open BlockStored, extended while parents chain
        self._chain_parent: bytes | None = None

    def stored(self, block_hash: bytes, parent_hash: bytes | None) -> None:
        if self._chain is not None and self._chain[-1] == parent_hash:
            self._chain.append(block_hash)
            return
        self._close_chain()
        self._chain, self._chain_parent = [block_hash], parent_hash

    def removed(self, block_hash: bytes) -> None:
        self._close_chain()
        if self._events and isinstance(self._events[-1], msg.BlockRemoved):
            self._events[-1].hashes.append(block_hash)
        else:
            self._events.append(msg.BlockRemoved([block_hash]))

    def cleared(self) -> None:
        """Everything recorded before is subsumed by the reset."""
        self._chain = None
        self._events = [msg.AllBlocksCleared()]

    def take(self) -> list[msg.KVEvent]:
        self._close_chain()
        events, self._events = self._events, []
        return events

    def _close_chain(self) -> None:
        if self._chain is not None:
            self._events.append(msg.BlockStored(self._chain, self._chain_parent, len(self._chain) * self.block_size))
            self._chain = None


class KVEventPublisher:
    """PUB `endpoint` + ROUTER `replay_endpoint(endpoint)`; keeps the last `buffer_size` batches for replays."""

    def __init__(self, endpoint: str, block_size: int, buffer_size: int = 10_000):
        self.endpoint, self.replay = endpoint, msg.replay_endpoint(endpoint)
        self.block_size = block_size
        self.recorder = KVEventRecorder(block_size)
        self._seq = itertools.count()
        self._ctx = zmq.Context()
        inbox = f"inproc://llmfleet-kv-events-{id(self)}"
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(inbox)
        self._push = self._ctx.socket(zmq.PUSH)   # the engine thread's end
        self._push.connect(inbox)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.bind(endpoint)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.bind(self.replay)
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=buffer_size)
        self._thread = threading.Thread(target=self._serve, name="llmfleet-kv-events", daemon=True)
        self._thread.start()

    @property
    def info(self) -> dict:
        """What a gateway needs to subscribe (the server's /kv_events answer)."""
        return {"endpoint": self.endpoint, "replay_endpoint": self.replay, "block_size": self.block_size}

    def attach(self, pool) -> "KVEventPublisher":
        pool.events = self.recorder
        return self

    def publish_pending(self) -> None:
        """Called once per engine step: sends what the cache recorded since the last call, if anything."""
        events = self.recorder.take()
        if events:
            seq = next(self._seq)
            batch = msg.KVEventBatch(seq, time.time(), events, self.block_size)
            self._push.send_multipart([seq.to_bytes(8, "little"), msg.encode(batch)])

    def close(self) -> None:
        self._push.send_multipart([b"", b""])  # stops the thread, which closes its sockets
        self._thread.join(5)
        self._push.close(linger=0)
        self._ctx.term()

    # ---- the publisher's thread -----------------------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        poller.register(self._router, zmq.POLLIN)
        try:
            while self._step(dict(poller.poll())):
                pass
        finally:
            for sock in (self._pull, self._pub, self._router):
                sock.close(linger=0)

    def _step(self, ready: dict) -> bool:
        if self._pull in ready:
            seq_bytes, data = self._pull.recv_multipart()
            if not data:
                return False
            seq = int.from_bytes(seq_bytes, "little")
            self._buffer.append((seq, data))
            self._pub.send(data)
        if self._router in ready:
            self._answer_replay(*self._router.recv_multipart())
        return True

    def _answer_replay(self, identity: bytes, data: bytes) -> None:
        try:
            start = msg.decode_request(data).from_seq
        except Exception:  # noqa: BLE001 - a malformed request gets just the end marker
            start = 0
        for seq, batch in self._buffer:
            if seq >= start:
                self._router.send_multipart([identity, batch])
        oldest = self._buffer[0][0] if self._buffer else 0
        nxt = self._buffer[-1][0] + 1 if self._buffer else 0
        self._router.send_multipart([identity, msg.encode(msg.ReplayEnd(oldest, nxt))])


def start_publisher(endpoint: str | None, block_size: int, pool) -> KVEventPublisher | None:
    """The engine's publisher feeding on `pool`, or None when KV events are off (`endpoint` None)."""
    if endpoint is None:
        return None
    logger.info("publishing KV events on %s (replay on %s)", endpoint, msg.replay_endpoint(endpoint))
    return KVEventPublisher(endpoint, block_size).attach(pool)
