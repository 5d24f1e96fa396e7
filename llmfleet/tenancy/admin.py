"""The admin API (LiteLLM-shaped): keys, teams, users and spend. The master key may do everything; a virtual key
may only read its own key's info and its own spend (403 for anything else), so tenants never see each other."""
from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.types import Receive, Scope, Send

from llmfleet.tenancy import admin_models as m
from llmfleet.tenancy.errors import TenancyError, send_json
from llmfleet.tenancy.keys import key_hint, new_id, new_key, parse_duration
from llmfleet.tenancy.records import KeyRecord
from llmfleet.tenancy.schema import keys, teams, users
from llmfleet.tenancy.service import ADMIN, Tenancy
from llmfleet.tenancy.views import date_param, key_view, limit_values, row_view

MAX_ADMIN_BODY = 1 << 20
SELF_SERVICE = frozenset({("GET", "/key/info"), ("GET", "/spend/logs")})


def is_admin_path(path: str) -> bool:
    return path.startswith(("/key/", "/team/", "/user/", "/spend/", "/global/"))


async def handle(tenancy: Tenancy, principal, scope: Scope, receive: Receive, send: Send) -> None:
    route = (scope["method"], scope["path"])
    handler = ROUTES.get(route)
    if handler is None:
        known = any(path == scope["path"] for _, path in ROUTES)
        raise TenancyError(405 if known else 404, f"no route {route[0]} {route[1]}",
                           "method_not_allowed" if known else "not_found")
    if principal != ADMIN and route not in SELF_SERVICE:
        raise TenancyError(403, "this route needs the master key", "forbidden")
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if "key" in query:  # a key in a URL would reach the access log: the server logs the scope it handed over
        scope["query_string"] = urlencode({**query, "key": "REDACTED"}).encode()
    body = await _read_json(receive) if scope["method"] == "POST" else {}
    await send_json(send, 200, json.dumps(await handler(tenancy, principal, query, body)).encode())


async def _read_json(receive: Receive) -> dict:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_ADMIN_BODY:
            raise TenancyError(413, f"admin bodies are limited to {MAX_ADMIN_BODY} bytes", "request_too_large")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    try:
        data = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TenancyError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(data, dict):
        raise TenancyError(400, "the request body must be a JSON object", "invalid_value")
    m.check_strings(data)
    return data


def _parse(model: type[BaseModel], body: dict) -> BaseModel:
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise TenancyError(400, f"{param}: {first['msg']}" if param else first["msg"], "invalid_value",
                           param=param) from None
    m.check_metadata(parsed)
    return parsed


def _durations(body: BaseModel) -> dict:
    try:
        return {"budget_duration_s": parse_duration(body.budget_duration, "budget_duration"),
                "expires_in": parse_duration(getattr(body, "duration", None), "duration")}
    except ValueError as exc:
        param = str(exc).split(":")[0]
        raise TenancyError(400, str(exc), "invalid_value", param=param) from None


async def _require_team(tenancy: Tenancy, team_id: str | None) -> None:
    if team_id is not None and await tenancy.store.row(teams, "team_id", team_id) is None:
        raise TenancyError(400, f"team_id: no team {team_id!r}", "team_not_found", param="team_id")


async def _insert(tenancy: Tenancy, table, values: dict, what: str) -> None:
    try:
        await tenancy.store.insert(table, values)
    except IntegrityError:
        raise TenancyError(409, f"{what} already exists", "already_exists") from None


async def key_generate(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    req = _parse(m.KeyGenerate, body)
    await _require_team(tenancy, req.team_id)
    return await _new_key(tenancy, req, req.team_id, req.user_id)


async def _new_key(tenancy: Tenancy, req: BaseModel, team_id: str | None, user_id: str | None) -> dict:
    durations, now, key = _durations(req), time.time(), new_key()
    expires = now + durations["expires_in"] if durations["expires_in"] else None
    values = {**limit_values(req, durations["budget_duration_s"], now), "key_hash": tenancy.hash(key),
              "key_id": new_id(), "key_hint": key_hint(key), "key_alias": getattr(req, "key_alias", None),
              "team_id": team_id, "user_id": user_id, "expires_at": expires, "blocked": False, "updated_at": now}
    await _insert(tenancy, keys, values, "the key")
    return {"key": key, **key_view(values)}


async def key_info(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    row = await _find_key(tenancy, query.get("key"), query.get("key_id"), principal)
    return {"key_id": row.key_id, "info": key_view(row._mapping)}


async def _find_key(tenancy: Tenancy, key: str | None, key_id: str | None, principal):
    if key is None and key_id is None:
        if isinstance(principal, KeyRecord):
            key_id = principal.key_id
        else:
            raise TenancyError(400, "key: give key or key_id", "invalid_value", param="key")
    row = (await tenancy.store.row(keys, "key_hash", tenancy.hash(key)) if key is not None
           else await tenancy.store.row(keys, "key_id", key_id))
    if isinstance(principal, KeyRecord) and (row is None or row.key_id != principal.key_id):
        raise TenancyError(403, "a key may read only its own info", "forbidden")
    if row is None:
        raise TenancyError(404, "no such key", "key_not_found", param="key")
    return row


async def key_update(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    req = _parse(m.KeyUpdate, body)
    row = await _find_key(tenancy, req.key, req.key_id, principal)
    await _require_team(tenancy, req.team_id)
    values = _update_values(req, _durations(req))
    if "metadata" in values or any(name in values for name in m.MODEL_LIMITS):
        values["metadata"] = m.metadata_with_model_limits(req, values.get("metadata", row.metadata))
    for name in m.MODEL_LIMITS:
        values.pop(name, None)
    await tenancy.store.update_key(row.key_id, values)
    await tenancy.invalidate(row.key_hash)
    return {"key_id": row.key_id, "info": key_view((await tenancy.store.row(keys, "key_id", row.key_id))._mapping)}


def _update_values(req: m.KeyUpdate, durations: dict) -> dict:
    given = req.model_fields_set - {"key", "key_id", "budget_duration", "duration"}
    values = {name: getattr(req, name) for name in given}
    if "budget_duration" in req.model_fields_set:
        values["budget_duration_s"] = durations["budget_duration_s"]
    if "duration" in req.model_fields_set:
        values["expires_at"] = time.time() + durations["expires_in"] if durations["expires_in"] else None
    return values


async def key_delete(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    req = _parse(m.KeyDelete, body)
    ids = list(req.key_ids)
    for key in req.keys:
        row = await tenancy.store.row(keys, "key_hash", tenancy.hash(key))
        ids += [row.key_id] if row is not None else []
    deleted = await tenancy.store.delete_keys(ids)
    for _, digest in deleted:
        await tenancy.invalidate(digest)
    return {"deleted_keys": [key_id for key_id, _ in deleted]}


async def team_new(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    req = _parse(m.TeamNew, body)
    now = time.time()
    values = {**limit_values(req, _durations(req)["budget_duration_s"], now), "team_id": req.team_id or new_id(),
              "team_alias": req.team_alias}
    await _insert(tenancy, teams, values, f"team {values['team_id']!r}")
    return row_view(values)


async def user_new(tenancy: Tenancy, principal, query: dict, body: dict) -> dict:
    """A user, and a first key of theirs (with the user's limits)."""
    req = _parse(m.UserNew, body)
    await _require_team(tenancy, req.team_id)
    now = time.time()
    values = {**limit_values(req, _durations(req)["budget_duration_s"], now), "user_id": req.user_id or new_id(),
              "user_email": req.user_email, "team_id": req.team_id}
    await _insert(tenancy, users, values, f"user {values['user_id']!r}")
    key = await _new_key(tenancy, m.KeyGenerate(**req.model_dump(include=set(m.Limits.model_fields))),
                         req.team_id, values["user_id"])
    return {**row_view(values), "key": key["key"], "key_id": key["key_id"]}


async def spend_logs(tenancy: Tenancy, principal, query: dict, body: dict) -> list[dict]:
    filters = {c: query[c] for c in ("key_id", "team_id", "user_id", "model") if c in query}
    if "key" in query:
        filters["key_id"] = (await _find_key(tenancy, query["key"], None, principal)).key_id
    if isinstance(principal, KeyRecord):
        if filters.get("key_id", principal.key_id) != principal.key_id or set(filters) - {"key_id", "model"}:
            raise TenancyError(403, "a key may read only its own spend", "forbidden")
        filters["key_id"] = principal.key_id
    limit = _int_param(query, "limit", 100, 10_000)
    rows = await tenancy.store.spend_logs(filters, date_param(query, "start_date"), date_param(query, "end_date"),
                                          limit)
    return [row_view(r) for r in rows]


async def spend_report(tenancy: Tenancy, principal, query: dict, body: dict) -> list[dict]:
    group_by = query.get("group_by", "model")
    if group_by not in ("model", "key_id", "team_id", "user_id"):
        raise TenancyError(400, "group_by: one of model, key_id, team_id, user_id", "invalid_value",
                           param="group_by")
    return await tenancy.store.spend_report(group_by, date_param(query, "start_date"),
                                            date_param(query, "end_date"))


def _int_param(query: dict, name: str, default: int, most: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise TenancyError(400, f"{name}: an integer in [1, {most}] expected", "invalid_value", param=name)
    return int(text)


ROUTES = {("POST", "/key/generate"): key_generate, ("GET", "/key/info"): key_info,
          ("POST", "/key/update"): key_update, ("POST", "/key/delete"): key_delete,
          ("POST", "/team/new"): team_new, ("POST", "/user/new"): user_new,
          ("GET", "/spend/logs"): spend_logs, ("GET", "/global/spend/report"): spend_report}
