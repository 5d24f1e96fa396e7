"""Data parallelism: several engine cores behind one API server, each its own process with its own KV cache.

`start_engine_client(config)` is what the server starts: one EngineCoreClient when `data_parallel_size` is 1, else
a DataParallelClient over that many. It has the client's face (add_request, generate, embed, abort, stats, ...);
each new request goes to the core with the fewest requests in flight, and stays there. Core r (each of
`tensor_parallel_size` GPUs) starts at GPU r * tensor_parallel_size of the configured device; on CPU all share it.
One core dying is the engine dying: `on_dead` fires once, and every core's requests fail as the dead one's do.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.engine.streams import EngineDeadError, RequestObserver
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import EngineStats


async def start_engine_client(config: EngineConfig, observer: RequestObserver | None = None,
                              log_level: str = "INFO"):
    """An EngineCoreClient, or a DataParallelClient when `config.data_parallel_size` > 1; started and ready."""
    if config.data_parallel_size == 1:
        return await EngineCoreClient.start(config, observer, log_level)
    return await DataParallelClient.start(config, observer, log_level)


def replica_config(config: EngineConfig, rank: int) -> EngineConfig:
    """Core `rank`'s config: one core's worth, on its own GPUs, its KV events on its own port pair."""
    device = config.device
    if device.startswith("cuda"):
        first = int(device.split(":", 1)[1]) if ":" in device else 0
        device = f"cuda:{first + rank * config.tensor_parallel_size}"
    events = config.kv_events_endpoint
    if events is not None and rank:
        host, port = events.rsplit(":", 1)
        events = f"{host}:{int(port) + 2 * rank}"   # each publisher uses its port and the next (replay)
    return dataclasses.replace(config, data_parallel_size=1, device=device, kv_events_endpoint=events)


class DataParallelClient:
    """N engine-core clients as one. Build with `await DataParallelClient.start(config)`."""

    def __init__(self, config: EngineConfig, clients: list[EngineCoreClient]):
        self.config, self.clients = config, clients
        first = clients[0]
        self.loop, self.tokenizer, self.limits = first.loop, first.tokenizer, first.limits
        self.model_name, self.max_model_len = first.model_name, first.max_model_len
        self.tasks, self.embedding_size = first.tasks, first.embedding_size
        self.on_dead: Callable[[EngineDeadError], None] | None = None
        self.error: EngineDeadError | None = None
        for client in clients:
            client.on_dead = self._died

    @classmethod
    async def start(cls, config: EngineConfig, observer: RequestObserver | None = None,
                    log_level: str = "INFO") -> "DataParallelClient":
        starts = [asyncio.ensure_future(EngineCoreClient.start(replica_config(config, r), observer, log_level))
                  for r in range(config.data_parallel_size)]
        done = await asyncio.gather(*starts, return_exceptions=True)
        failed = [r for r in done if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(c.shutdown() for c in done if isinstance(c, EngineCoreClient)))
            raise failed[0]
        return cls(config, list(done))

    def _died(self, error: EngineDeadError) -> None:
        if self.error is not None:
            return
        self.error = error
        for client in self.clients:   # the survivors' requests fail too, with the same cause
            if client.error is None:
                client._die(error)
        if self.on_dead is not None:
            self.on_dead(error)

    @property
    def observer(self) -> RequestObserver | None:
        return self.clients[0].observer

    @observer.setter
    def observer(self, observer: RequestObserver | None) -> None:
        for client in self.clients:
            client.observer = observer

    @property
    def pid(self) -> int | None:
        return self.clients[0].pid

    @property
    def pids(self) -> list[int | None]:
        return [c.pid for c in self.clients]

    def _least_loaded(self) -> EngineCoreClient:
        if self.error is not None:
            raise self.error
        return min(self.clients, key=lambda c: c.num_in_flight)

    # ---- requests: to the least loaded core; aborts to every core (each ignores ids it does not hold) -------
    async def add_request(self, *args, **kwargs):
        return await self._least_loaded().add_request(*args, **kwargs)

    async def add_pooling_request(self, *args, **kwargs):
        return await self._least_loaded().add_pooling_request(*args, **kwargs)

    async def embed(self, *args, **kwargs):
        return await self._least_loaded().embed(*args, **kwargs)

    async def generate(self, *args, **kwargs) -> AsyncIterator:
        async for output in self._least_loaded().generate(*args, **kwargs):
            yield output

    def abort(self, request_ids: str | list[str]) -> None:
        for client in self.clients:
            client.abort(request_ids)

    def abort_all(self) -> None:
        for client in self.clients:
            client.abort_all()

    async def stats(self) -> EngineStats:
        """Every core's stats added up (the KV usage is the mean over cores)."""
        return merge_stats(await asyncio.gather(*(c.stats() for c in self.clients)))

    async def reset_prefix_cache(self) -> int:
        return sum(await asyncio.gather(*(c.reset_prefix_cache() for c in self.clients)))

    @property
    def num_in_flight(self) -> int:
        return sum(c.num_in_flight for c in self.clients)

    @property
    def num_waiting(self) -> int:
        return sum(c.num_waiting for c in self.clients)

    async def shutdown(self, timeout: float = 30.0) -> None:
        await asyncio.gather(*(c.shutdown(timeout) for c in self.clients))


def merge_stats(stats: list[EngineStats]) -> EngineStats:
    """Counts summed field by field (lists position by position); kv_cache_usage averaged."""
    merged = {}
    for name in EngineStats.__struct_fields__:
        values = [getattr(s, name) for s in stats]
        if name == "kv_cache_usage":
            merged[name] = sum(values) / len(values)
        elif isinstance(values[0], list):
            width = max(len(v) for v in values)
            merged[name] = [sum(v[i] for v in values if i < len(v)) for i in range(width)]
        else:
            merged[name] = sum(values)
    return EngineStats(**merged)
