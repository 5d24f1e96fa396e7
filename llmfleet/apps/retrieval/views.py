"""The JSON shapes of the vector store API (OpenAI's objects), from catalog rows and hits."""
from __future__ import annotations

from llmfleet.apps.retrieval.catalog import FileRow, StoreRow


def store(row: StoreRow, files: list[FileRow]) -> dict:
    counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
    for f in files:
        counts[f.status] = counts.get(f.status, 0) + 1
    return {"id": row.id, "object": "vector_store", "created_at": row.created_at, "name": row.name,
            "usage_bytes": sum(f.usage_bytes for f in files), "file_counts": {**counts, "total": len(files)},
            "status": "completed" if not counts["in_progress"] else "in_progress", "expires_after": None,
            "expires_at": None, "last_active_at": row.last_active_at, "metadata": row.metadata}


def file(row: FileRow) -> dict:
    return {"id": row.id, "object": "vector_store.file", "usage_bytes": row.usage_bytes,
            "created_at": row.created_at, "vector_store_id": row.store_id, "status": row.status,
            "last_error": row.last_error, "chunking_strategy": row.chunking, "attributes": row.attributes,
            "filename": row.filename, "chunks": row.chunks}


def page(items: list[dict], query: dict) -> dict:
    """OpenAI's cursor page: `limit` (1-100, default 20), `order` (asc | desc by creation), `after`, `before`."""
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise ValueError("limit: an integer expected") from None
    if not 1 <= limit <= 100:
        raise ValueError("limit: must be in [1, 100]")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValueError("order: asc or desc expected")
    items = items[::-1] if order == "desc" else items
    ids = [item["id"] for item in items]
    if query.get("after") in ids:
        items = items[ids.index(query["after"]) + 1:]
    elif query.get("before") in ids:
        items = items[:ids.index(query["before"])]
    shown = items[:limit]
    return {"object": "list", "data": shown, "first_id": shown[0]["id"] if shown else None,
            "last_id": shown[-1]["id"] if shown else None, "has_more": len(items) > limit}


def search_page(queries: list[str], hits: list, files: dict[str, FileRow]) -> dict:
    return {"object": "vector_store.search_results.page", "search_query": queries,
            "data": [{"file_id": h.doc, "filename": files[h.doc].filename, "score": round(h.score, 6),
                      "attributes": files[h.doc].attributes, "content": [{"type": "text", "text": h.text}]}
                     for h in hits], "has_more": False, "next_page": None}
