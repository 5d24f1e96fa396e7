"""HTTP surface of /v1/responses: create, retrieve, delete, list input items (the official client's responses.*)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from llmfleet.protocol.openai.responses import ResponsesRequest
from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.errors import APIError
from llmfleet.server.responses.serving import create_response
from llmfleet.server.responses.store import ResponseStore

router = APIRouter()


def response_store(request: Request) -> ResponseStore:
    """FastAPI dependency: the store the lifespan put in the request state."""
    return request.state.responses


@router.post("/v1/responses")
async def responses(body: ResponsesRequest, raw: Request, ctx: ServingContext = Depends(serving_context),
                    store: ResponseStore = Depends(response_store)) -> Response:
    return await create_response(body, ctx, store, raw)


@router.get("/v1/responses/{response_id}")
async def retrieve(response_id: str, store: ResponseStore = Depends(response_store)) -> JSONResponse:
    return JSONResponse(store.get(response_id).response)


@router.delete("/v1/responses/{response_id}")
async def delete(response_id: str, store: ResponseStore = Depends(response_store)) -> JSONResponse:
    store.delete(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(response_id: str, order: str = "desc",
                      store: ResponseStore = Depends(response_store)) -> JSONResponse:
    """The response's input items, newest first by default (OpenAI's order), or `order=asc`."""
    if order not in ("asc", "desc"):
        raise APIError(400, f"order: must be asc or desc, got {order!r}", "order", "invalid_value")
    items = store.get(response_id).input_items
    items = items if order == "asc" else items[::-1]
    return JSONResponse({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                         "last_id": items[-1]["id"] if items else None, "has_more": False})


@router.post("/v1/responses/{response_id}/cancel")
async def cancel(response_id: str, store: ResponseStore = Depends(response_store)) -> JSONResponse:
    store.get(response_id)
    raise APIError(400, "response_id: only background responses can be cancelled, and this server runs none",
                   "response_id", "invalid_value")
