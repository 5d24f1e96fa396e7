"""The same admission as LocalLimiter, shared by several gateways through Redis: one Lua script checks every
subject and takes from all of them atomically, another settles. Counters expire on their own (minute windows after
two minutes, budget periods after their end), so nothing accumulates in Redis."""
from __future__ import annotations

import math

from llmfleet.tenancy.limits import Ask, Rejected, Ticket, WINDOW_S, retry_after, status_of
from llmfleet.tenancy.records import Subject

# Per subject i: KEYS rpm, tpm, parallel, budget; ARGV rpm, tpm, parallel, budget limits (-1: none),
# the period's stored spend, the budget key's ttl (-1: none). ARGV[1..3]: subjects, tokens, cost.
_ADMIT = """
local n, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function num(v) return tonumber(v or '0') or 0 end
for i = 1, n do
  local a, k = 3 + (i - 1) * 6, (i - 1) * 4
  local rpm, tpm, par, bud = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  if rpm >= 0 and num(redis.call('GET', KEYS[k+1])) + 1 > rpm then return {i, 'rpm'} end
  if tpm >= 0 and num(redis.call('GET', KEYS[k+2])) + tokens > tpm then return {i, 'tpm'} end
  if par >= 0 and num(redis.call('GET', KEYS[k+3])) + 1 > par then return {i, 'parallel'} end
  if bud >= 0 then
    redis.call('HSETNX', KEYS[k+4], 'spent', ARGV[a+5])
    local spent, held = num(redis.call('HGET', KEYS[k+4], 'spent')), num(redis.call('HGET', KEYS[k+4], 'reserved'))
    if spent + held + cost > bud + 1e-9 then return {i, 'budget'} end
  end
end
local out = {0}
for i = 1, n do
  local a, k = 3 + (i - 1) * 6, (i - 1) * 4
  local requests, used = 0, 0
  if tonumber(ARGV[a+1]) >= 0 then requests = redis.call('INCR', KEYS[k+1]); redis.call('EXPIRE', KEYS[k+1], 120) end
  if tonumber(ARGV[a+2]) >= 0 then used = redis.call('INCRBY', KEYS[k+2], tokens); redis.call('EXPIRE', KEYS[k+2], 120) end
  if tonumber(ARGV[a+3]) >= 0 then redis.call('INCR', KEYS[k+3]); redis.call('EXPIRE', KEYS[k+3], 3600) end
  if tonumber(ARGV[a+4]) >= 0 then
    redis.call('HINCRBYFLOAT', KEYS[k+4], 'reserved', cost)
    if tonumber(ARGV[a+6]) > 0 then redis.call('EXPIRE', KEYS[k+4], ARGV[a+6]) end
  end
  out[#out + 1] = requests
  out[#out + 1] = used
end
return out
"""

# Per subject i: KEYS tpm, parallel, budget; ARGV has parallel?, budget? (1/0). ARGV[1..4]: n, token delta,
# reserved cost, actual cost.
_SETTLE = """
local n, delta, held, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
for i = 1, n do
  local a, k = 4 + (i - 1) * 2, (i - 1) * 3
  if delta ~= 0 and redis.call('EXISTS', KEYS[k+1]) == 1 then redis.call('INCRBY', KEYS[k+1], delta) end
  if ARGV[a+1] == '1' and tonumber(redis.call('GET', KEYS[k+2]) or '0') > 0 then redis.call('DECR', KEYS[k+2]) end
  if ARGV[a+2] == '1' and redis.call('EXISTS', KEYS[k+3]) == 1 then
    redis.call('HINCRBYFLOAT', KEYS[k+3], 'reserved', '-' .. held)
    redis.call('HINCRBYFLOAT', KEYS[k+3], 'spent', cost)
  end
end
return 0
"""


def _limit(value) -> str:
    return "-1" if value is None else repr(value)


class RedisLimiter:
    def __init__(self, redis, prefix: str):
        self._redis, self._prefix = redis, prefix
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, s: Subject, minute: int, period: int) -> list[str]:
        p = f"{self._prefix}:{{{s.name}}}"
        return [f"{p}:rpm:{minute}", f"{p}:tpm:{minute}", f"{p}:par", f"{p}:budget:{period}"]

    async def admit(self, subjects: tuple[Subject, ...], ask: Ask, now: float) -> Ticket:
        minute = int(now // WINDOW_S)
        periods = tuple(s.period(now) for s in subjects)
        keys, args = [], [str(len(subjects)), str(ask.tokens), repr(ask.cost)]
        for s, period in zip(subjects, periods):
            keys += self._keys(s, minute, period)
            ttl = -1 if math.isinf(s.period_end(now)) else int(s.period_end(now) - now) + 60
            args += [_limit(s.rpm_limit), _limit(s.tpm_limit), _limit(s.max_parallel_requests),
                     _limit(s.max_budget), repr(s.spent_in(period)), str(ttl)]
        out = await self._admit(keys=keys, args=args)
        if int(out[0]) != 0:
            s = subjects[int(out[0]) - 1]
            reason = out[1].decode() if isinstance(out[1], bytes) else out[1]
            raise Rejected(reason, s, retry_after(reason, s, now), await self._status(subjects[0], minute, now))
        return Ticket(subjects, ask, minute, periods, status_of(subjects[0], int(out[1]), int(out[2]), now))

    async def settle(self, ticket: Ticket, tokens: int, cost: float) -> None:
        keys, args = [], [str(len(ticket.subjects)), str(tokens - ticket.ask.tokens), repr(ticket.ask.cost),
                          repr(cost)]
        for s, period in zip(ticket.subjects, ticket.periods):
            keys += self._keys(s, ticket.minute, period)[1:]
            args += ["1" if s.max_parallel_requests is not None else "0", "1" if s.max_budget is not None else "0"]
        await self._settle(keys=keys, args=args)

    async def _status(self, first: Subject, minute: int, now: float):
        rpm_key, tpm_key = self._keys(first, minute, 0)[:2]
        requests, tokens = await self._redis.mget(rpm_key, tpm_key)
        return status_of(first, int(requests or 0), int(tokens or 0), now)

    async def close(self) -> None:
        pass
