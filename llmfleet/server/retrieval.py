"""The vector store API on a replica: files attached by id come from this server's /v1/files."""
from __future__ import annotations

import asyncio

from llmfleet.apps.retrieval.mount import limit_chunks, mount_retrieval
from llmfleet.apps.retrieval.service import RetrievalService


class ReplicaRetrieval:
    """Mounted when the app is built; bound to the file store and the engine's context length at start-up."""

    def __init__(self, app, config):
        self._files = None
        self.service: RetrievalService = mount_retrieval(app, config, self._file)

    def start(self, file_store, max_model_len: int, own_model: bool) -> None:
        self._files = file_store
        if own_model:   # embedding with this replica's own model: chunks must fit its context
            limit_chunks(self.service, max_model_len)

    async def _file(self, file_id: str) -> tuple[str, bytes] | None:
        if self._files is None:
            return None
        meta = await self._files.get_file(file_id)
        if meta is None:
            return None
        return meta["filename"], await asyncio.to_thread(self._files.path_of(file_id).read_bytes)

    async def close(self) -> None:
        await self.service.close()
