"""Follows one replica's KV events (llmfleet.protocol.kv_events) into the gateway's prefix index.

A SUB socket receives every batch; batches are applied in sequence order. On start, and whenever a batch's number
skips ahead of the next expected one, the subscriber asks the replica's replay socket (DEALER -> ROUTER) for what
it missed; it asks again after `idle_replay_s` without a live batch, since a SUB socket drops what is published
before its subscription reaches the publisher (a batch lost with nothing after it would otherwise stay unseen until
the replica's next event). A replay that no longer holds the oldest missed batch, or a publisher that starts
counting again from 0 (the replica restarted), makes the index forget the replica and start over from what the
replay holds.
"""
from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio

from llmfleet.gateway.index import PrefixIndex
from llmfleet.protocol import kv_events as msg

logger = logging.getLogger(__name__)


class KVEventSubscriber:
    def __init__(self, url: str, endpoint: str, index: PrefixIndex, ctx: zmq.asyncio.Context,
                 replay_timeout_s: float = 2.0, on_gap=None, idle_replay_s: float = 1.0):
        self.url, self.endpoint, self.index, self.ctx = url, endpoint, index, ctx
        self.replay_endpoint = msg.replay_endpoint(endpoint)
        self.replay_timeout_s, self.idle_replay_s = replay_timeout_s, idle_replay_s
        self.on_gap = on_gap or (lambda url, lost: None)   # metrics hook: (replica, batches lost for good)
        self.next_seq, self.last_timestamp = 0, 0.0
        self.replays = 0
        self.synced = asyncio.Event()   # the first replay finished

    async def run(self) -> None:
        """Until cancelled: subscribe, catch up by replay, then apply batches as they come."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.endpoint)
        self.index.precise_replicas.add(self.url)
        try:
            await self.replay()
            self.synced.set()
            while True:
                try:
                    frame = await asyncio.wait_for(sub.recv(), self.idle_replay_s)
                except asyncio.TimeoutError:
                    await self.replay(idle=True)   # quiet: anything published that this socket never saw?
                    continue
                await self.handle(msg.decode_batch(frame))
        finally:
            sub.close(linger=0)

    async def handle(self, batch: msg.KVEventBatch | msg.ReplayEnd) -> None:
        if not isinstance(batch, msg.KVEventBatch):
            return
        if batch.seq < self.next_seq:
            if batch.timestamp > self.last_timestamp:   # numbering started again: the replica restarted
                logger.info("KV events from %s: the publisher restarted; resynchronising", self.url)
                self.reset()
                await self.replay()
            return   # otherwise already applied (a replay overlapping the live stream)
        if batch.seq > self.next_seq:
            logger.info("KV events from %s: expected batch %d, got %d; replaying", self.url, self.next_seq, batch.seq)
            await self.replay()
            if batch.seq < self.next_seq:
                return
        self._apply(batch)

    async def replay(self, idle: bool = False) -> None:
        """Fetches and applies every held batch from `next_seq` on (from 0 again if the publisher restarted).
        `idle`: a routine check after a quiet spell, so a replica that does not answer is only logged at debug
        level (its health checks report it)."""
        self.replays += 1
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.connect(self.replay_endpoint)
        try:
            for _ in range(2):
                end = await self._replay_once(dealer, idle)
                if end is not None and end.next_seq > self.next_seq:   # batches gone from the replay buffer
                    self._lost(end.next_seq - self.next_seq)
                    self.next_seq = end.next_seq
                if end is None or end.next_seq >= self.next_seq:
                    return
                self.reset()   # the publisher holds fewer batches than we applied: it restarted
        finally:
            dealer.close(linger=0)

    async def _replay_once(self, dealer, idle: bool = False) -> msg.ReplayEnd | None:
        await dealer.send(msg.encode(msg.ReplayRequest(self.next_seq)))
        try:
            while True:
                reply = msg.decode_batch(await asyncio.wait_for(dealer.recv(), self.replay_timeout_s))
                if isinstance(reply, msg.ReplayEnd):
                    return reply
                if reply.seq >= self.next_seq:
                    self._apply(reply, replaying=True)
        except asyncio.TimeoutError:
            log = logger.debug if idle else logger.warning
            log("KV events from %s: the replay socket %s did not answer", self.url, self.replay_endpoint)
            return None

    def _apply(self, batch: msg.KVEventBatch, replaying: bool = False) -> None:
        if batch.seq > self.next_seq and replaying:   # the replay buffer no longer holds what we missed
            self._lost(batch.seq - self.next_seq)
        for event in batch.events:
            self.index.apply(self.url, event)
        self.next_seq, self.last_timestamp = batch.seq + 1, batch.timestamp

    def _lost(self, count: int) -> None:
        """Batches missed for good: what we know of the replica may be wrong, so start from what comes next."""
        logger.warning("KV events from %s: %d batch(es) lost; forgetting its cache contents", self.url, count)
        self.on_gap(self.url, count)
        self.index.clear(self.url)

    def reset(self) -> None:
        """The replica restarted (its cache is empty and its numbering starts again at 0)."""
        self.index.clear(self.url)
        self.next_seq, self.last_timestamp = 0, 0.0
