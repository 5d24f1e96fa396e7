"""The OpenAI API in front of the engine deployments: Ray Serve's HTTP proxy sends every request here.

For each request the ingress reads the body, picks the model's version (the gateway's sticky weighted split,
gateway/splits.py) and calls that version's deployment through its handle; Ray Serve's request router for the
deployment (router.py) picks the replica. The answer is relayed as the replica's server app gave it: status,
headers, body, SSE events one by one.

Nothing is lost when a replica dies. A request whose replica fails before the client got a byte (the actor died or
became unreachable, or it answered 429 / 503) is sent again, to another replica, up to `max_retries` times; a
non-streaming answer is collected whole first, so it always counts as "before a byte". A stream that breaks after
its first event ends with one error event and `data: [DONE]`, as through the gateway.
"""
from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmfleet.gateway.errors import error_response, json_object, sse_error
from llmfleet.gateway.policies import session_key_of
from llmfleet.gateway.splits import TrafficSplit
from llmfleet.rayserve.asgi import ResponseHead
from llmfleet.rayserve.config import RayFleetConfig, RayVersion
from llmfleet.rayserve.request import EngineRequest

logger = logging.getLogger(__name__)
FORWARDED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")
RETRY_STATUSES = (429, 503)       # the replica's queue is full, or it is draining: another one may take it
_FAILURES = (RayActorError, ReplicaUnavailableError)   # the replica's actor died or cannot be reached
_HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
               "upgrade", "accept-encoding"}
VERSION_HEADER, REPLICA_HEADER = "x-llmfleet-version", "x-llmfleet-replica"
RETRIES_HEADER = "x-llmfleet-retries"     # on an answer that needed retries: how many


class _Failed(Exception):
    """One attempt that failed before the client got a byte: it may be retried on another replica."""


@serve.ingress()
class OpenAIIngress:
    def __init__(self, config: RayFleetConfig, handles: dict):
        self.config = config
        self.handles = handles                       # deployment name -> DeploymentHandle
        self.split = TrafficSplit(config.models)
        self.created = int(time.time())

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(title="llmfleet on Ray Serve", version="0.1.0")
        for path in FORWARDED:
            app.add_api_route(path, self.forward, methods=["POST"])
        app.add_api_route("/v1/models", self.list_models, methods=["GET"])
        app.add_api_route("/health", self.health, methods=["GET"])
        app.add_api_route("/ready", self.health, methods=["GET"])
        if self.config.api_key is not None:
            from llmfleet.server.middleware import ApiKeyMiddleware

            app.add_middleware(ApiKeyMiddleware, api_key=self.config.api_key)
        return app

    async def health(self) -> Response:
        return Response(status_code=200)

    async def list_models(self) -> JSONResponse:
        cards = [{"id": name, "object": "model", "created": self.created, "owned_by": "llmfleet"}
                 for name in sorted(self.config.models)]
        return JSONResponse({"object": "list", "data": cards})

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        parsed = self._parse(request, body)
        if isinstance(parsed, Response):
            return parsed
        payload, version = parsed
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP]
        engine_request = EngineRequest("POST", request.url.path, headers, body, payload)
        handle = self.handles[version.deployment_name].options(stream=True)
        return await self._send(handle, engine_request, version, payload.get("stream") is True)

    def _parse(self, request: Request, body: bytes) -> tuple[dict, RayVersion] | Response:
        payload = json_object(body)
        if isinstance(payload, Response):
            return payload
        model = payload.get("model")
        if model in (None, "") and len(self.config.models) == 1:
            model = next(iter(self.config.models))
        if not isinstance(model, str) or model not in self.config.models:
            return error_response(404, f"The model `{model}` does not exist. This app serves: "
                                       f"{', '.join(sorted(self.config.models))}", "model", "model_not_found")
        return payload, self.split.version_for(model, session_key_of(request.headers, payload))

    async def _send(self, handle, request: EngineRequest, version: RayVersion, stream: bool) -> Response:
        failed: _Failed | None = None
        for attempt in range(self.config.max_retries + 1):
            if failed is not None:
                logger.warning("retrying %s on another replica of %s (%s)", request.path, version.deployment_name,
                               failed)
            try:
                return await self._attempt(handle, request, version, stream, attempt)
            except _Failed as exc:
                failed = exc
                if request.replica is not None:
                    request.avoid.add(request.replica)
                request.replica = None
        return error_response(502, f"every replica tried failed ({failed})", None, "replicas_failed")

    async def _attempt(self, handle, request: EngineRequest, version: RayVersion, stream: bool,
                       attempt: int) -> Response:
        answer = handle.remote(request)
        try:
            head = await answer.__anext__()
            if head.status in RETRY_STATUSES and attempt < self.config.max_retries:
                answer.cancel()
                raise _Failed(f"the replica answered {head.status}")
            if not stream or head.status != 200:
                body = b"".join([chunk async for chunk in answer])
                return Response(body, head.status, headers=self._headers(head, version, request, attempt))
        except _FAILURES as exc:
            answer.cancel()
            raise _Failed(f"{type(exc).__name__}: {exc}") from None
        except StopAsyncIteration:
            raise _Failed("the replica ended the answer before its status") from None
        return StreamingResponse(_relay(answer), head.status, headers=self._headers(head, version, request, attempt))

    def _headers(self, head: ResponseHead, version: RayVersion, request: EngineRequest, retries: int) -> dict:
        # Ray's proxy sets x-request-id itself (the client's, else its own): the replica's echo of it would repeat it
        headers = {k: v for k, v in head.headers if k.lower() not in ("content-length", "x-request-id")}
        headers[VERSION_HEADER] = version.version
        if request.replica is not None:
            headers[REPLICA_HEADER] = request.replica
        if retries:
            headers[RETRIES_HEADER] = str(retries)
        return headers


async def _relay(answer):
    """The stream's chunks; a replica lost mid-stream ends it with an error event. Cancelled with the client."""
    finished = False
    try:
        async for chunk in answer:
            yield chunk
        finished = True
    except _FAILURES as exc:
        finished = True
        logger.warning("stream broke: %s", exc)
        yield sse_error(f"the replica failed mid-stream: {type(exc).__name__}")
    finally:
        if not finished:   # the client went away: the replica's call is cancelled, the engine aborts it
            answer.cancel()
