"""Tier escalation on the cheap tier's own confidence: its answer's mean token logprob (tiers.py, min_mean_logprob).

For a non-streaming request that a tier with `min_mean_logprob` took, the gateway asks the replica for token
logprobs (completions: `logprobs: 0`, chat: `logprobs: true`) unless the client did, reads the answer, and averages
the logprobs of every generated token over all choices. Below the threshold the answer is dropped and the client's
own request goes to the next tier (which may judge its answer in turn); otherwise the answer is passed on, with the
logprobs the client did not ask for removed. Escalations are counted in
`llmfleet_gateway_tier_escalations_total{from_tier,to_tier,reason}` and the reason is in x-llmfleet-tier-reason.
An answer without logprobs (a replica that ignores the field) or a non-200 answer is passed on as it is.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.responses import Response

from llmfleet.gateway.policies import RoutingRequest
from llmfleet.gateway.tiers import Tier

Forward = Callable[[bytes], Awaitable[Response]]


def apply_tier(route: RoutingRequest, tier: Tier, reason: str, payload: dict) -> bytes:
    """Point `route` at `tier` (the client's `payload` with the tier's model): the body to send."""
    route.tier, route.model = (tier.model, reason), tier.model
    route.payload = {**payload, "model": tier.model}
    return json.dumps(route.payload).encode()


async def judged(fleet, route: RoutingRequest, virtual: str, tier: Tier, forward: Forward) -> Response:
    """Send to `tier`, and on to the next tiers while an answer's mean logprob is below its tier's threshold."""
    client_payload = route.payload
    while True:
        asked, added = with_logprobs(route.path, route.payload)
        response = await forward(json.dumps(asked).encode())
        if response.status_code != 200:
            return response
        try:
            answer = json.loads(response.body)
        except ValueError:
            return response
        mean = mean_logprob(answer)
        above = fleet.tiers.after(virtual, tier)
        if mean is None or mean >= tier.min_mean_logprob or above is None:
            return _stripped(response, answer) if added else response
        reason = f"{route.tier[1]}; " if route.tier[1] != "cheapest tier" else ""
        reason += f"{tier.model}: mean logprob {mean:.3f} < {tier.min_mean_logprob:g}"
        fleet.metrics.escalations.labels(tier.model, above.model, "logprob").inc()
        fleet.metrics.tiers.labels(above.model).inc()
        body = apply_tier(route, above, reason, client_payload)
        tier = above
        if tier.min_mean_logprob is None or fleet.tiers.after(virtual, tier) is None:
            return await forward(body)


def with_logprobs(path: str, payload: dict) -> tuple[dict, bool]:
    """The payload asking for token logprobs, and whether that was added (so they are stripped afterwards)."""
    if path.endswith("/chat/completions"):
        return (payload, False) if payload.get("logprobs") is True else ({**payload, "logprobs": True}, True)
    asked = payload.get("logprobs")
    if isinstance(asked, int) and not isinstance(asked, bool):
        return payload, False
    return {**payload, "logprobs": 0}, True


def mean_logprob(answer: dict) -> float | None:
    """The mean logprob of every generated token in the answer's choices; None if it carries none."""
    values: list[float] = []
    for choice in answer.get("choices") or []:
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        if not isinstance(logprobs, dict):
            continue
        if isinstance(logprobs.get("content"), list):   # chat
            values += [t.get("logprob") for t in logprobs["content"] if isinstance(t, dict)]
        elif isinstance(logprobs.get("token_logprobs"), list):   # completions
            values += logprobs["token_logprobs"]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(values) / len(values) if values else None


def _stripped(response: Response, answer: dict) -> Response:
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            choice["logprobs"] = None
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return Response(json.dumps(answer).encode(), response.status_code, headers=headers)
