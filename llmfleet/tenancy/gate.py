"""One metered completion request: estimate it, admit it against the key's and team's limits and budgets
(reserving its maximum cost), pass it on, read its usage from the answer, settle, and book its spend."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from llmfleet.tenancy.errors import TenancyError, ratelimit_headers
from llmfleet.tenancy.guards.injection_policy import check_prompt
from llmfleet.tenancy.guards.policy import guard_answer, guard_prompt
from llmfleet.tenancy.hooks import answer_check, filter_request
from llmfleet.tenancy.limits import Ask, Rejected, Ticket
from llmfleet.tenancy.bodies import json_object_or_none, read_body, replay, with_body
from llmfleet.tenancy.metering import Inspection, ResponseMeter, inspect_request
from llmfleet.tenancy.records import KeyRecord
from llmfleet.tenancy.service import Tenancy

logger = logging.getLogger(__name__)
COST_HEADER = b"x-llmfleet-cost"
_LIMIT_NAMES = {"rpm": "requests per minute", "tpm": "tokens per minute", "parallel": "parallel requests"}


async def serve_metered(tenancy: Tenancy, record: KeyRecord, app: ASGIApp, scope: Scope, receive: Receive,
                        send: Send) -> None:
    body = await read_body(receive)
    if body is None:
        return  # the client left before sending its request
    action = record.pii_action or tenancy.config.pii_action
    body, flags = await _guard_request(tenancy, record, body, action)
    found = inspect_request(body, tenancy.config.default_max_tokens)
    if not record.allows(found.model):
        raise TenancyError(403, f"this key may not use model {found.model!r}", "model_not_allowed", param="model")
    price = tenancy.prices.price(found.model)
    ask = Ask(found.prompt_tokens + found.completion_tokens, price.cost(found.prompt_tokens, found.completion_tokens))
    started = time.time()
    try:
        ticket = await tenancy.limiter.admit(record.subjects_for(found.model), ask, started)
    except Rejected as exc:
        if exc.reason == "budget" and tenancy.alerts is not None:
            _background(tenancy.alerts.exhausted(exc.subject.name, exc.subject.max_budget))
        raise _rejection(exc) from None
    except Exception as exc:  # Redis unreachable: refuse (failing open would lift every limit and budget)
        logger.warning("rate limiter unavailable: %s", exc)
        raise TenancyError(503, "the rate limiter is unavailable; retry shortly", "limiter_unavailable",
                           headers=[(b"retry-after", b"1")]) from None
    costs: list[float] = []

    def finish_headers(usage: tuple[int, int] | None) -> list:
        costs.append(price.cost(*usage) if usage else 0.0)
        return [(COST_HEADER, f"{costs[0]:.8f}".encode())]

    answer_filter = None if action == "off" else (lambda b: guard_answer(b, action, f"key {record.key_id}"))
    check = None
    if tenancy.content_filter is not None and tenancy.config.filter_responses and not found.stream:
        check = answer_check(tenancy.content_filter, found.body, _filter_context(record, found.model))
    meter = ResponseMeter(send, found.stream, found.strip_usage, ratelimit_headers(ticket.status) + flags,
                          finish_headers, answer_filter, cost_of=lambda usage: price.cost(*usage),
                          answer_check=check)
    if record.log_requests and tenancy.request_log is not None:
        meter.stream_text = {}  # a streamed answer's text goes to the request log too
    try:
        await app(with_body(scope, found.body), replay(found.body, receive), meter.send)
    finally:
        usage = meter.usage or _fallback_usage(meter, found)
        cost = price.cost(*usage) if 0 < meter.status < 400 else 0.0
        await _settle(tenancy, ticket, sum(usage), cost)
        row = _spend_row(scope, record, ticket, found, usage, cost, meter.status, started)
        tenancy.spend.add(row)
        if record.log_requests and tenancy.request_log is not None:
            tenancy.request_log.write(_log_record(row, found, meter))


_tasks: set[asyncio.Task] = set()  # alerts in flight (held so that they are not collected mid-way)


def _background(coro) -> None:
    task = asyncio.create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _settle(tenancy: Tenancy, ticket: Ticket, tokens: int, cost: float) -> None:
    """Shielded from the handler's cancellation (a client gone); a failure is logged, never raised over the
    request's own outcome (Redis counters expire on their own; the spend row is still booked)."""
    try:
        await asyncio.shield(tenancy.limiter.settle(ticket, tokens, cost))
    except Exception:
        logger.exception("settling a request with the rate limiter failed")


async def _guard_request(tenancy: Tenancy, record: KeyRecord, body: bytes, pii_action: str) -> tuple[bytes, list]:
    """The body after the pre-call guards (PII, prompt injection, the external filter) and the headers they add
    to the answer; TenancyError when one refuses it."""
    if pii_action != "off":
        body = _guard_prompt(body, pii_action, record.key_id)
    flags = []
    injection = record.injection_action or tenancy.config.injection_action
    if injection != "off":
        flags = await check_prompt(body, injection, tenancy.config.injection_threshold, f"key {record.key_id}")
    if tenancy.content_filter is not None:
        body = await filter_request(tenancy.content_filter, body, _filter_context(record, None))
    return body, flags


def _filter_context(record: KeyRecord, model: str | None) -> dict:
    return {"key_id": record.key_id, "team_id": record.team_id, "model": model}


def _guard_prompt(body: bytes, action: str, key_id: str) -> bytes:
    data = json_object_or_none(body)
    if data is None:
        return body  # inspect_request answers it
    return json.dumps(guard_prompt(data, action, f"key {key_id}")).encode()


def _fallback_usage(meter: ResponseMeter, found: Inspection) -> tuple[int, int]:
    """No usage in the answer: an error costs nothing; a stream cut short costs its prompt and each event as a
    token (a generous count: an event carries at least one)."""
    if not 0 < meter.status < 400:
        return 0, 0
    return found.prompt_tokens, meter.events


def _rejection(exc: Rejected) -> TenancyError:
    headers = ratelimit_headers(exc.status)
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    kind = exc.subject.name.split(":")[0]
    if ":model:" in exc.subject.name:
        kind = f"key's model {exc.subject.name.split(':model:', 1)[1]!r}"
    if exc.reason == "budget":
        return TenancyError(429, f"the {kind}'s budget is exhausted (max_budget {exc.subject.max_budget})",
                            "insufficient_quota", headers=headers, type_="insufficient_quota")
    limit = {"rpm": exc.subject.rpm_limit, "tpm": exc.subject.tpm_limit,
             "parallel": exc.subject.max_parallel_requests}[exc.reason]
    return TenancyError(429, f"rate limit reached for the {kind}: {_LIMIT_NAMES[exc.reason]} (limit {limit})",
                        "rate_limit_exceeded", headers=headers)


def _log_record(row: dict, found: Inspection, meter: ResponseMeter) -> dict:
    """What the request log keeps: the spend row's facts, the request as sent upstream, and the answer (a JSON
    answer whole; for a stream, the count of its events and each choice's text)."""
    keep = ("request_id", "key_id", "team_id", "user_id", "model", "prompt_tokens", "completion_tokens", "cost",
            "status", "started_at", "ended_at")
    record = {k: row[k] for k in keep}
    record["request"] = json.loads(found.body)
    try:
        record["response"] = json.loads(meter.answer) if meter.answer else {
            "stream_events": meter.events, "choices": [{"index": i, "text": "".join(parts)}
                                                       for i, parts in sorted((meter.stream_text or {}).items())]}
    except ValueError:
        record["response"] = None
    return record


def _spend_row(scope: Scope, record: KeyRecord, ticket: Ticket, found: Inspection, usage: tuple[int, int],
               cost: float, status: int, started: float) -> dict:
    request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
    periods = ticket.periods + (0,)
    return {"request_id": request_id, "key_id": record.key_id, "team_id": record.team_id,
            "user_id": record.user_id, "model": found.model, "prompt_tokens": usage[0],
            "completion_tokens": usage[1], "cost": cost, "status": status or 499, "started_at": started,
            "ended_at": time.time(), "key_period": periods[0], "team_period": periods[1]}
