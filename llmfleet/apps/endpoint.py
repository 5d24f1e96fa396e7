"""The one way apps reach a model: an OpenAI-compatible endpoint over HTTP (a replica, the gateway, or an external
provider), for embeddings, chat completions and token counts. Apps never touch the engine's internals."""
from __future__ import annotations

import logging

import httpx
import numpy as np

logger = logging.getLogger(__name__)


class EndpointError(Exception):
    """The endpoint failed or answered something unusable; the message says what (`status`: the HTTP status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Endpoint:
    """`base_url` is the server root (http://host:port, with or without /v1); `api_key` its bearer token."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0):
        root = base_url.rstrip("/")
        self.root = root[:-3] if root.endswith("/v1") else root
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.root, headers=headers, timeout=timeout_s)
        self._no_tokenize = False

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, path: str, body: dict) -> dict:
        """POST `body` as JSON; the JSON answer, EndpointError for a transport error or a non-200 status."""
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.root}{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise EndpointError(f"{self.root}{path} answered {response.status_code}: {response.text[:300]}",
                                response.status_code)
        return response.json()

    async def embed(self, model: str, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text: [len(texts), dim]."""
        answer = await self.post("/v1/embeddings", {"model": model, "input": texts})
        rows = sorted(answer.get("data") or [], key=lambda d: d["index"])
        if len(rows) != len(texts):
            raise EndpointError(f"/v1/embeddings gave {len(rows)} vectors for {len(texts)} inputs")
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    async def chat(self, model: str, messages: list[dict], **fields) -> str:
        """The first choice's text of one chat completion."""
        answer = await self.post("/v1/chat/completions", {"model": model, "messages": messages, **fields})
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"/v1/chat/completions answered without a message: {str(answer)[:200]}") from None

    async def count_tokens(self, model: str, text: str) -> int:
        """Tokens of `text` by the server's /tokenize; an estimate (4 characters a token) where there is none."""
        if not self._no_tokenize:
            try:
                return int((await self.post("/tokenize", {"model": model, "prompt": text,
                                                          "add_special_tokens": False}))["count"])
            except EndpointError as exc:
                if exc.status not in (404, 405):
                    raise
                logger.warning("no /tokenize at %s: token counts are estimated", self.root)
                self._no_tokenize = True
        return len(text) // 4 + 1
