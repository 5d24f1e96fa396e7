"""The Conversations API: /v1/conversations[/{id}[/items[/{item_id}]]], as OpenAI spells it. Each handler takes
the tenant, the path's ids, the query and the JSON body, and gives (status, answer); ValueError is a 400 naming
the field, NotFound a 404 (another tenant's conversation is just as missing)."""
from __future__ import annotations

from llmfleet.apps.memory.items import conversation_object, item_list, parse_items
from llmfleet.apps.memory.service import Memory, NotFound

PREFIX = "/v1/conversations"
MAX_METADATA = 16


def _metadata(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA:
        raise ValueError(f"metadata: a mapping of at most {MAX_METADATA} string keys and values expected")
    if not all(isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()):
        raise ValueError("metadata: keys (up to 64 characters) and values (up to 512) must be strings")
    return value


async def create(memory: Memory, tenant: str, body: dict) -> tuple[int, dict]:
    raw = parse_items(body.get("items"))
    row = await memory.store.create(tenant, _metadata(body.get("metadata")))
    if raw:
        await memory.append(tenant, row["id"], await memory.new_items(raw))
    return 200, conversation_object(row)


async def _existing(memory: Memory, tenant: str, conversation_id: str) -> dict:
    row = await memory.store.get(tenant, conversation_id)
    if row is None:
        raise NotFound(conversation_id)
    return row


async def retrieve(memory: Memory, tenant: str, conversation_id: str) -> tuple[int, dict]:
    return 200, conversation_object(await _existing(memory, tenant, conversation_id))


async def update(memory: Memory, tenant: str, conversation_id: str, body: dict) -> tuple[int, dict]:
    await _existing(memory, tenant, conversation_id)
    if "metadata" not in body:
        raise ValueError("metadata: the field to update is missing")
    row = await memory.store.update_metadata(tenant, conversation_id, _metadata(body["metadata"]))
    return 200, conversation_object(row)


async def delete(memory: Memory, tenant: str, conversation_id: str) -> tuple[int, dict]:
    if not await memory.store.delete(tenant, conversation_id):
        raise NotFound(conversation_id)
    return 200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


async def list_items(memory: Memory, tenant: str, conversation_id: str, query: dict) -> tuple[int, dict]:
    await _existing(memory, tenant, conversation_id)
    limit = _limit(query.get("limit", "20"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValueError(f"order: asc or desc expected, got {order!r}")
    after_seq = 0
    if query.get("after"):
        after = await memory.store.item(tenant, conversation_id, query["after"])
        if after is None:
            raise ValueError(f"after: no item {query['after']!r} in this conversation")
        after_seq = after["seq"]
    rows = await memory.store.items(tenant, conversation_id, after_seq, limit + 1, descending=order == "desc")
    return 200, item_list(rows[:limit], len(rows) > limit)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise ValueError(f"limit: an integer in [1, 100] expected, got {text!r}")
    return int(text)


async def add_items(memory: Memory, tenant: str, conversation_id: str, body: dict) -> tuple[int, dict]:
    await _existing(memory, tenant, conversation_id)
    raw = parse_items(body.get("items"))
    if not raw:
        raise ValueError("items: at least one item expected")
    rows = await memory.append(tenant, conversation_id, await memory.new_items(raw))
    if rows is None:
        raise NotFound(conversation_id)
    return 200, item_list(rows, False)


async def get_item(memory: Memory, tenant: str, conversation_id: str, item_id: str) -> tuple[int, dict]:
    await _existing(memory, tenant, conversation_id)
    row = await memory.store.item(tenant, conversation_id, item_id)
    if row is None:
        raise NotFound(item_id)
    return 200, row["item"]


async def delete_item(memory: Memory, tenant: str, conversation_id: str, item_id: str) -> tuple[int, dict]:
    conversation = await _existing(memory, tenant, conversation_id)
    if not await memory.store.delete_item(tenant, conversation_id, item_id):
        raise NotFound(item_id)
    return 200, conversation_object(conversation)


async def dispatch(memory: Memory, tenant: str, method: str, parts: list[str], query: dict,
                   body: dict) -> tuple[int, dict] | None:
    """Route by method and the path's parts after /v1/conversations; None for an unknown route."""
    match (method, parts):
        case ("POST", []):
            return await create(memory, tenant, body)
        case ("GET", [cid]):
            return await retrieve(memory, tenant, cid)
        case ("POST", [cid]):
            return await update(memory, tenant, cid, body)
        case ("DELETE", [cid]):
            return await delete(memory, tenant, cid)
        case ("GET", [cid, "items"]):
            return await list_items(memory, tenant, cid, query)
        case ("POST", [cid, "items"]):
            return await add_items(memory, tenant, cid, body)
        case ("GET", [cid, "items", item_id]):
            return await get_item(memory, tenant, cid, item_id)
        case ("DELETE", [cid, "items", item_id]):
            return await delete_item(memory, tenant, cid, item_id)
    return None
