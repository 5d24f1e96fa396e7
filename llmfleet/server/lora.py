"""The routes that load and unload LoRA adapters at run time (the adapters served: server/adapters.py).

A request names an adapter in its `model` field; /v1/models lists each adapter with its base model as `parent`.
`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` checks the PEFT folder here (a bad one is a 400) and
serves it under that name at once; `POST /v1/unload_lora_adapter {"lora_name"}` stops serving it (requests already
running finish; its device slot and host copy are reused as other adapters need them). With tenancy on, both
routes need the master key. Adapters get engine ids in load order, never reused, so an adapter loaded again under
an old name is new weights to the engine; its prefix-cache namespace is its name, so the engine's cache is reset
when a name comes back with a different folder.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from llmfleet.server.context import ServingContext, serving_context
from llmfleet.server.errors import APIError


class LoadAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_path: str


class UnloadAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_int_id: int | None = None


router = APIRouter()


def _require_admin(raw: Request, ctx: ServingContext) -> None:
    if ctx.config.tenancy is None:
        return   # without tenancy, the server's own api_key (if any) already guards every route
    from llmfleet.tenancy.service import ADMIN

    if getattr(raw.state, "principal", None) != ADMIN:
        raise APIError(403, "loading and unloading adapters needs the master key", None, "forbidden")


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadAdapter, raw: Request, ctx: ServingContext = Depends(serving_context)) -> dict:
    _require_admin(raw, ctx)
    try:
        request, reused = ctx.adapters.load(body.lora_name, body.lora_path)
    except ValueError as exc:
        raise APIError.from_value_error(exc, "lora_path") from None
    if reused:
        await ctx.engine.reset_prefix_cache()   # blocks cached under the name belong to the old weights
    return {"status": "loaded", "lora_name": request.lora_name, "lora_int_id": request.lora_int_id}


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadAdapter, raw: Request,
                              ctx: ServingContext = Depends(serving_context)) -> dict:
    _require_admin(raw, ctx)
    ctx.adapters.unload(body.lora_name)
    return {"status": "unloaded", "lora_name": body.lora_name}
