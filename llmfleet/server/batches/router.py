"""HTTP surface of /v1/files and /v1/batches (OpenAI's shapes; the official client's files.* and batches.* work).

Uploads are multipart (`file`, `purpose=batch`) and bounded by the server's --max-body-bytes like any request body.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from llmfleet.protocol.openai.common import StrictModel
from llmfleet.server.batches.service import BatchService
from llmfleet.server.common.sampling import check_unknown
from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.errors import APIError

router = APIRouter()


def batch_service(request: Request) -> BatchService:
    """FastAPI dependency: the service the lifespan put in the request state."""
    return request.state.batches


class CreateBatchRequest(StrictModel):
    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None


FILE_PURPOSES = ("batch", "assistants", "user_data")


# ---- files --------------------------------------------------------------------------------------------------------
@router.post("/v1/files")
async def upload_file(file: UploadFile = File(...), purpose: str = Form(...),
                      service: BatchService = Depends(batch_service)) -> JSONResponse:
    if purpose not in FILE_PURPOSES:
        raise APIError(400, f"purpose: one of {', '.join(FILE_PURPOSES)} expected (batch inputs, or documents for "
                       f"vector stores), got {purpose!r}", "purpose", "invalid_value")
    content = await file.read()
    if not content:
        raise APIError(400, "file: is empty", "file", "invalid_value")
    return JSONResponse(await service.store.add_file(content, file.filename or "upload.jsonl", purpose))


@router.get("/v1/files")
async def list_files(purpose: str | None = None, service: BatchService = Depends(batch_service)) -> JSONResponse:
    data = await service.store.list_files(purpose)
    return JSONResponse({"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, service: BatchService = Depends(batch_service)) -> JSONResponse:
    return JSONResponse(await _file(service, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, service: BatchService = Depends(batch_service)) -> FileResponse:
    meta = await _file(service, file_id)
    return FileResponse(service.store.path_of(file_id), media_type="application/jsonl", filename=meta["filename"])


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, service: BatchService = Depends(batch_service)) -> JSONResponse:
    await _file(service, file_id)
    await service.store.delete_file(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def _file(service: BatchService, file_id: str) -> dict:
    meta = await service.store.get_file(file_id)
    if meta is None:
        raise APIError(404, f"file_id: no file {file_id!r}", "file_id", "not_found")
    return meta


# ---- batches ------------------------------------------------------------------------------------------------------
@router.post("/v1/batches")
async def create_batch(body: CreateBatchRequest, service: BatchService = Depends(batch_service),
                       ctx: ServingContext = Depends(serving_context)) -> JSONResponse:
    check_unknown(body, ctx.config.lenient_requests)
    return JSONResponse(await service.create(body.endpoint, body.input_file_id, body.completion_window,
                                             body.metadata))


@router.get("/v1/batches")
async def list_batches(limit: int = Query(20, ge=1, le=100), after: str | None = None,
                       service: BatchService = Depends(batch_service)) -> JSONResponse:
    data, more = await service.store.list_batches(limit, after)
    return JSONResponse({"object": "list", "data": data, "has_more": more,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(batch_id: str, service: BatchService = Depends(batch_service)) -> JSONResponse:
    return JSONResponse(await service.get(batch_id))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, service: BatchService = Depends(batch_service)) -> JSONResponse:
    return JSONResponse(await service.cancel(batch_id))
