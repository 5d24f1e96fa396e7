"""The typed state every route works with, built once by the app's lifespan (never None-checked by routes)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.protocol.lora import LoRARequest
from llmfleet.server.adapters import AdapterRegistry
from llmfleet.server.common.prompts import CHARS_PER_TOKEN
from llmfleet.server.common.tokenizer_pool import TokenizerPool
from llmfleet.server.config import ServerConfig
from llmfleet.server.errors import APIError
from llmfleet.server.lifecycle import Lifecycle
from llmfleet.server.metrics import ServerMetrics


@dataclass(slots=True)
class ServingContext:
    """The engine, the server's tokenizer copy, metrics and draining state: everything a route needs.

    `num_waiting_sequences` counts the sequences (prompts x n) this server admitted that have no token yet: the
    engine counts a request of n samples as one, so admission keeps its own count (see generation.Submission).
    """
    config: ServerConfig
    engine: EngineCoreClient
    tokenizer: Any              # the routes' own copy: the engine client detokenizes with its own
    metrics: ServerMetrics
    lifecycle: Lifecycle
    model_names: tuple[str, ...]
    created: int                # unix time the model was loaded (/v1/models)
    num_waiting_sequences: int = 0
    instance_id: str = field(default_factory=lambda: secrets.token_hex(6))  # this process's, in stored ids
    tokenizers: TokenizerPool = field(init=False)  # copies of `tokenizer` on worker threads, off the event loop
    adapters: AdapterRegistry = field(init=False)  # LoRA adapters served by name (`--lora-modules`, loaded later)

    def __post_init__(self) -> None:
        self.tokenizers = TokenizerPool(self.tokenizer)
        engine = self.engine.config
        self.adapters = AdapterRegistry(engine.enable_lora, engine.max_lora_rank, self.model_names)
        for name, path in self.config.lora_modules:
            self.adapters.load(name, path)

    def lora_for(self, model: str | None) -> LoRARequest | None:
        """The adapter a request's (resolved) model name selects; None for the base model."""
        return self.adapters.get(model)

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def max_prompt_chars(self) -> int:
        """Longer text cannot fit the context: it is refused before it is tokenized."""
        return self.max_model_len * CHARS_PER_TOKEN

    def resolve_model(self, requested: str | None) -> str:
        """The model name to answer with; 404 for a model this server does not serve."""
        if requested is None or requested == "":
            return self.model_names[0]
        if requested not in self.model_names and self.adapters.get(requested) is None:
            served = ", ".join([*self.model_names, *self.adapters.adapters])
            raise APIError(404, f"The model `{requested}` does not exist. This server serves: {served}", "model",
                           "model_not_found")
        return requested

    def admit(self, num_sequences: int = 1, param: str = "n") -> None:
        """Count `num_sequences` (prompts x n) as waiting, or refuse them: 400 when more than the waiting bound
        could ever hold, 503 while draining or with the engine dead, 429 when the bound is reached. The caller
        gives them back with `release` as they start (or end)."""
        limit, retry = self.config.max_waiting_requests, self.config.retry_after_s
        if num_sequences > limit:
            raise APIError(400, f"{param}: the request asks for {num_sequences} sequences (prompts x n); this "
                                f"server takes at most {limit} per request", param, "invalid_value")
        if self.lifecycle.draining:
            raise APIError(503, "the server is shutting down; retry on another replica", None, "draining", retry)
        if self.engine.error is not None:
            raise APIError(503, f"the engine is not running: {self.engine.error}", None, "engine_dead", retry)
        waiting = max(self.engine.num_waiting, self.num_waiting_sequences)  # other front-ends count in the engine's
        if waiting + num_sequences > limit:
            raise APIError(429, f"the server is overloaded: {waiting} sequences are waiting (limit {limit}); retry "
                                f"later", None, "queue_full", retry)
        self.num_waiting_sequences += num_sequences

    def release(self, num_sequences: int) -> None:
        """Admitted sequences that started (got a token), finished, or were given up."""
        self.num_waiting_sequences -= num_sequences


def serving_context(request: Request) -> ServingContext:
    """FastAPI dependency: the context the lifespan put in the request state."""
    return request.state.ctx
