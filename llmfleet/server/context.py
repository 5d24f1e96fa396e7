"""The typed state every route works with, built once by the app's lifespan (never None-checked by routes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.server.config import ServerConfig
from llmfleet.server.errors import APIError
from llmfleet.server.lifecycle import Lifecycle
from llmfleet.server.metrics import ServerMetrics


@dataclass(slots=True)
class ServingContext:
    """The engine, the server's tokenizer copy, metrics and draining state: everything a route needs."""
    config: ServerConfig
    engine: EngineCoreClient
    tokenizer: Any              # the routes' own copy: the engine client detokenizes with its own
    metrics: ServerMetrics
    lifecycle: Lifecycle
    model_names: tuple[str, ...]
    created: int                # unix time the model was loaded (/v1/models)

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def resolve_model(self, requested: str | None) -> str:
        """The model name to answer with; 404 for a model this server does not serve."""
        if requested is None or requested == "":
            return self.model_names[0]
        if requested not in self.model_names:
            raise APIError(404, f"The model `{requested}` does not exist. This server serves: "
                                f"{', '.join(self.model_names)}", "model", "model_not_found")
        return requested

    def admit(self, num_requests: int = 1) -> None:
        """Refuse new work while draining (503) or when too many requests wait for their first token (429)."""
        retry = self.config.retry_after_s
        if self.lifecycle.draining:
            raise APIError(503, "the server is shutting down; retry on another replica", None, "draining", retry)
        if self.engine.error is not None:
            raise APIError(503, f"the engine is not running: {self.engine.error}", None, "engine_dead", retry)
        waiting = self.engine.num_waiting
        if waiting + num_requests > self.config.max_waiting_requests:
            raise APIError(429, f"the server is overloaded: {waiting} requests are waiting (limit "
                                f"{self.config.max_waiting_requests}); retry later", None, "queue_full", retry)


def serving_context(request: Request) -> ServingContext:
    """FastAPI dependency: the context the lifespan put in the request state."""
    return request.state.ctx
