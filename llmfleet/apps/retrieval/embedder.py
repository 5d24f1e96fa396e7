"""Embeddings from an OpenAI-compatible /v1/embeddings endpoint (a replica serving an encoder, the gateway, or any
OpenAI-compatible service): the apps use models only through the API."""
from __future__ import annotations

import base64

import httpx
import numpy as np


class EmbeddingError(Exception):
    """The embedding endpoint failed or answered something unusable (the API maps it to 502)."""


class Embedder:
    def __init__(self, base_url: str, model: str | None, api_key: str | None = None, batch_size: int = 64,
                 timeout: float = 120.0):
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model, self.batch_size = model, batch_size

    async def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, in input order."""
        parts = [await self._batch(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)

    async def _batch(self, texts: list[str]) -> np.ndarray:
        body = {"input": texts, "encoding_format": "base64", **({"model": self.model} if self.model else {})}
        try:
            response = await self._client.post("/v1/embeddings", json=body)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding endpoint unreachable: {exc}") from None
        if response.status_code != 200:
            raise EmbeddingError(f"embedding endpoint answered {response.status_code}: {response.text[:300]}")
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise EmbeddingError(f"embedding endpoint returned {len(data)} vectors for {len(texts)} inputs")
        return np.stack([_vector(item["embedding"]) for item in data])

    async def close(self) -> None:
        await self._client.aclose()


def _vector(embedding) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)
