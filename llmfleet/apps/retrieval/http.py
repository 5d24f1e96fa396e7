"""/v1/vector_stores as plain Starlette routes, so the replica server (FastAPI) and the gateway (Starlette) mount
the same ones. The caller's team, user and groups come from the key tenancy resolved (scope["state"]["principal"]);
without tenancy every caller is one team, "default".

POST   /v1/vector_stores                          create (name, metadata, file_ids)
GET    /v1/vector_stores                          list (limit, order, after, before)
GET    /v1/vector_stores/{id}                     retrieve
DELETE /v1/vector_stores/{id}                     delete, chunks included
POST   /v1/vector_stores/{id}/files               add a file: file_id from /v1/files, or content + filename;
                                                  attributes, chunking_strategy, access {users, groups}
GET    /v1/vector_stores/{id}/files[/{file_id}]   list / retrieve
DELETE /v1/vector_stores/{id}/files/{file_id}     remove the file's chunks
POST   /v1/vector_stores/{id}/search              query, max_num_results, filters, ranking_options
"""
from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmfleet.apps.retrieval.embedder import EmbeddingError
from llmfleet.apps.retrieval.service import ApiError, RetrievalService
from llmfleet.apps.retrieval.types import Reader
from llmfleet.tenancy.service import ADMIN

logger = logging.getLogger(__name__)
DEFAULT_TEAM = "default"


def reader_of(scope) -> Reader:
    """The caller as the index sees it: a key's team (the key itself when it has none), user and groups."""
    principal = scope.get("state", {}).get("principal")
    if principal is None:
        return Reader(DEFAULT_TEAM)
    if principal == ADMIN:
        return Reader("admin")
    return Reader(principal.team_id or f"key:{principal.key_id}", principal.user_id,
                  tuple(getattr(principal, "groups", ()) or ()))


def routes(service: RetrievalService) -> list[Route]:
    """The API's routes over `service` (mount them on any Starlette or FastAPI app)."""

    def endpoint(handler, with_body: bool = False, with_query: bool = False):
        """`handler(reader, *path params, [body], [query])`, its result or error answered as JSON."""
        async def call(request: Request) -> JSONResponse:
            try:
                args = dict(request.path_params)
                if with_body:
                    args["body"] = await _json(request)
                if with_query:
                    args["query"] = dict(request.query_params)
                result = handler(reader_of(request.scope), **args)
                if hasattr(result, "__await__"):
                    result = await result
                return JSONResponse(result)
            except ApiError as exc:
                return error(exc.status, exc.message, exc.code, exc.param)
            except ValueError as exc:
                return error(400, str(exc), "invalid_value", None)
            except EmbeddingError as exc:
                return error(502, str(exc), "embedding_failed", None)
            except Exception as exc:
                logger.exception("%s %s failed", request.method, request.url.path)
                return error(500, f"internal error: {type(exc).__name__}", "internal_error", None)
        return call

    s = service
    return [
        Route("/v1/vector_stores", endpoint(s.create_store, True), methods=["POST"]),
        Route("/v1/vector_stores", endpoint(s.list_stores, with_query=True), methods=["GET"]),
        Route("/v1/vector_stores/{store_id}", endpoint(s.get_store), methods=["GET"]),
        Route("/v1/vector_stores/{store_id}", endpoint(s.delete_store), methods=["DELETE"]),
        Route("/v1/vector_stores/{store_id}/files", endpoint(s.add_file, True), methods=["POST"]),
        Route("/v1/vector_stores/{store_id}/files", endpoint(s.list_files, with_query=True), methods=["GET"]),
        Route("/v1/vector_stores/{store_id}/files/{file_id}", endpoint(s.get_file), methods=["GET"]),
        Route("/v1/vector_stores/{store_id}/files/{file_id}", endpoint(s.delete_file), methods=["DELETE"]),
        Route("/v1/vector_stores/{store_id}/search", endpoint(s.search, True), methods=["POST"]),
    ]


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"body: not valid JSON ({exc.msg})", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: a JSON object expected", "invalid_json")
    return body


def error(status: int, message: str, code: str, param: str | None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "invalid_request_error", 502: "api_error",
            500: "internal_error"}.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)
