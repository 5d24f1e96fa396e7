"""Conversation items as OpenAI's Conversations API spells them ({"type": "message", "role", "content": [{"type":
"input_text" | "output_text", "text"}]}), read from requests and chat messages, written back as API objects."""
from __future__ import annotations

ROLES = ("user", "assistant", "system", "developer")
MAX_ITEMS_PER_CALL = 20  # what OpenAI allows in one create / add call


def item_text(content, where: str) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}.content.{i}: a text part {{type, text}} expected")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(f"{where}.content: a string or a list of text parts expected")


def parse_item(raw, where: str) -> tuple[str, str, dict]:
    """(role, text, the item to store) of one input item; ValueError naming the field otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an item object expected")
    if raw.get("type", "message") != "message":
        raise ValueError(f"{where}.type: only message items are kept, got {raw.get('type')!r}")
    role = raw.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}.role: one of {', '.join(ROLES)} expected, got {role!r}")
    text = item_text(raw.get("content"), where)
    part = "output_text" if role == "assistant" else "input_text"
    return role, text, {"type": "message", "status": "completed", "role": role,
                        "content": [{"type": part, "text": text}]}


def parse_items(raw, where: str = "items") -> list[tuple[str, str, dict]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: a list of items expected")
    if len(raw) > MAX_ITEMS_PER_CALL:
        raise ValueError(f"{where}: at most {MAX_ITEMS_PER_CALL} items per call, got {len(raw)}")
    return [parse_item(item, f"{where}.{i}") for i, item in enumerate(raw)]


def conversation_object(row: dict) -> dict:
    return {"id": row["id"], "object": "conversation", "created_at": int(row["created_at"]),
            "metadata": row["metadata"] or {}}


def item_list(rows: list[dict], has_more: bool) -> dict:
    data = [row["item"] for row in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def as_message(row: dict) -> dict:
    return {"role": row["role"], "content": row["text"]}
