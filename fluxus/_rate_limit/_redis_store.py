"""Token buckets in Redis: GCRA in one Lua script, on Redis's clock."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fluxus._aio import asyncio_only, in_background, shielded
from fluxus._redis import PerLoop, async_client, sync_client
from fluxus._redis_scripts import Scripts

from ._gcra import ADMITTED, Bucket, Reservation, StorageUnavailableError
from ._queue import Ticket, Waiters

#: Seconds a storage I/O may block before it counts as an outage.
DEFAULT_SOCKET_TIMEOUT = 0.5

#: GCRA in Lua: the same arithmetic as :func:`reserve`, on Redis's clock, in
#: one atomic step. KEYS[1] is a hash with, per bucket ``i``, its TAT ``t<i>``
#: and the interval ``i<i>`` and capacity ``c<i>`` it was counted at.
#: ARGV: mode ("take", "peek" or "refund"), max_wait, cost (the tokens to
#: take or give back), the time ("" for Redis's clock; tests give one), the
#: number of buckets, then interval and capacity per bucket, then when the
#: limit last changed (Unix time, or "-inf"). A new limit keeps the tokens a bucket
#: holds, clamped to the new capacity (:func:`convert`), never a full bucket.
_GCRA_LUA = """
local key = KEYS[1]
local mode = ARGV[1]
local max_wait = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local n = tonumber(ARGV[5])
-- when the limit last changed (Unix time), to convert a bucket as it stood
local since = math.min(now, tonumber(ARGV[6 + 2 * n]) or now)
if mode == 'refund' then
  -- cost tokens back, at the interval the bucket is counted at now
  for i = 1, n do
    local got = redis.call('HMGET', key, 't' .. i, 'i' .. i)
    local tat, interval = tonumber(got[1]), tonumber(got[2])
    if tat and interval then
      redis.call('HSET', key, 't' .. i,
        string.format('%.6f', tat - cost * interval))
    end
  end
  return 1
end
local intervals, capacities, tats, fresh = {}, {}, {}, {}
for i = 1, n do
  local interval, capacity = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  intervals[i] = tonumber(interval)
  capacities[i] = tonumber(capacity)
  local got = redis.call('HMGET', key, 't' .. i, 'i' .. i, 'c' .. i)
  local tat = tonumber(got[1])
  if tat == nil then
    tat = now
    fresh[i] = true
  elseif got[2] ~= interval or got[3] ~= capacity then
    if tat <= since then
      tat = now  -- full, as full as a key never seen, under any limit
    else
      local held = tonumber(got[3]) - (tat - since) / tonumber(got[2])
      held = math.min(capacities[i], held)
      tat = since + (capacities[i] - held) * intervals[i]
    end
    fresh[i] = true
  end
  tats[i] = tat
end
local start = now
for i = 1, n do
  start = math.max(start, tats[i] - (capacities[i] - cost) * intervals[i])
end
local wait = start - now
-- TATs are stored to the microsecond: absorb the rounding
if wait <= 0.000002 then
  wait = 0
end
if mode == 'peek' or wait > max_wait then
  return {0, string.format('%.6f', wait)}
end
local horizon = 0
for i = 1, n do
  local tat = math.max(tats[i], start) + cost * intervals[i]
  if fresh[i] then
    redis.call('HSET', key, 't' .. i, string.format('%.6f', tat),
      'i' .. i, ARGV[4 + 2 * i], 'c' .. i, ARGV[5 + 2 * i])
  else
    redis.call('HSET', key, 't' .. i, string.format('%.6f', tat))
  end
  horizon = math.max(horizon, tat - now)
end
redis.call('PEXPIRE', key, math.ceil(horizon * 1000) + 1000)
return {1, string.format('%.6f', wait)}
"""


def _bucket_args(buckets: Sequence[Bucket], cost: int = 1, now: str = "") -> list[str]:
    args = [str(cost), now, str(len(buckets))]
    for bucket in buckets:
        args += [repr(bucket.interval), str(bucket.capacity)]
    since = buckets[0].since if buckets else -math.inf
    args.append(repr(since) if math.isfinite(since) else "-inf")
    return args


def _refund_args(ticket: Ticket, now: str) -> list[str]:
    n = len(ticket.buckets)
    return ["refund", "0", str(ticket.cost), now, str(n), *(["0", "0"] * n), "-inf"]


#: How the refusal under trio names this storage.
_STORAGE = "the Redis storage of fluxus.rate_limit"


def _max_wait_arg(max_wait: float) -> str:
    return repr(max_wait) if math.isfinite(max_wait) else "1e300"


class RedisTokenBuckets:
    """GCRA buckets in Redis, shared by every process using the same keys.

    The sync and the async client run the same script on the same keys, so
    sync and async callers draw on one budget. Clients are made on first use
    (see :func:`fluxus._redis.sync_client`). A caller told to wait joins
    this process's queue for its key: when it gives its slot back, the TAT
    moves back in Redis and this process's later waiters move forward.
    Waiters in other processes keep the slot they reserved (never too early).
    """

    def __init__(self, uri: str, clock: Callable[[], float] | None = None) -> None:
        self._uri = uri
        #: Redis's clock unless given (tests drive the script with their own).
        self._clock = clock
        self._sync: Any = None
        self._async = PerLoop(self._make_aclient)
        self._lock = threading.Lock()
        self._scripts = Scripts({"gcra": _GCRA_LUA})
        self.waiters = Waiters()

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _client(self) -> Any:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = sync_client(self._uri, DEFAULT_SOCKET_TIMEOUT)
        return self._sync

    def _make_aclient(self) -> Any:
        return async_client(self._uri, DEFAULT_SOCKET_TIMEOUT)

    def _errors(self) -> tuple[type[BaseException], ...]:
        import redis  # noqa: PLC0415 - an optional dependency

        return (redis.RedisError, OSError)

    def _reservation(
        self, reply: list[Any], key: str, buckets: Sequence[Bucket], cost: int
    ) -> Reservation:
        wait = float(reply[1])
        if not int(reply[0]):
            return Reservation(admitted=False, wait=wait)
        if wait <= 0:
            return ADMITTED
        ticket = self.waiters.join(key, wait, cost, buckets)
        return Reservation(admitted=True, wait=wait, token=ticket, origin=self)

    def take(
        self, key: str, buckets: Sequence[Bucket], max_wait: float, cost: int = 1
    ) -> Reservation:
        """Reserve *cost* tokens in Redis; see :meth:`MemoryTokenBuckets.take`."""
        args = [
            "take",
            _max_wait_arg(max_wait),
            *_bucket_args(buckets, cost, self._now()),
        ]
        return self._reservation(self._eval(key, args), key, buckets, cost)

    async def take_async(
        self, key: str, buckets: Sequence[Bucket], max_wait: float, cost: int = 1
    ) -> Reservation:
        """Reserve *cost* tokens in Redis without blocking the loop."""
        asyncio_only(_STORAGE)
        args = [
            "take",
            _max_wait_arg(max_wait),
            *_bucket_args(buckets, cost, self._now()),
        ]
        step = asyncio.ensure_future(self._eval_async(key, args))
        try:
            reply = await shielded(step)
        except asyncio.CancelledError:
            # The caller is gone: give back the slot it may have reserved.
            step.add_done_callback(
                lambda done: self._give_back(done, key, buckets, cost)
            )
            raise
        return self._reservation(reply, key, buckets, cost)

    def _give_back(
        self, step: asyncio.Future[Any], key: str, buckets: Sequence[Bucket], cost: int
    ) -> None:
        if step.cancelled() or step.exception() is not None:
            return
        answer = self._reservation(step.result(), key, buckets, cost)
        if answer.token is not None:
            in_background(self.refund_async(answer.token))

    def peek(self, key: str, buckets: Sequence[Bucket], cost: int = 1) -> float:
        """Return the seconds until *key* would be admitted, consuming nothing."""
        reply = self._eval(
            key, ["peek", "0", *_bucket_args(buckets, cost, self._now())]
        )
        return max(0.0, float(reply[1]))

    async def peek_async(
        self, key: str, buckets: Sequence[Bucket], cost: int = 1
    ) -> float:
        """Return the seconds until *key* would be admitted, without blocking."""
        asyncio_only(_STORAGE)
        reply = await self._eval_async(
            key, ["peek", "0", *_bucket_args(buckets, cost, self._now())]
        )
        return max(0.0, float(reply[1]))

    def admitted(self, token: object) -> None:
        """Take a waiter whose slot came off this process's queue."""
        assert isinstance(token, Ticket)  # noqa: S101 - take() made it
        self.waiters.done(token)

    def refund(self, token: object) -> None:
        """Give a reserved slot back, wherever it stands in the queue."""
        assert isinstance(token, Ticket)  # noqa: S101 - take() made it
        if self.waiters.leave(token):
            self._eval(token.key, _refund_args(token, self._now()))

    async def refund_async(self, token: object) -> None:
        """Give a reserved slot back without blocking the loop."""
        assert isinstance(token, Ticket)  # noqa: S101 - take() made it
        if self.waiters.leave(token):
            await shielded(
                self._eval_async(token.key, _refund_args(token, self._now()))
            )

    def _eval(self, key: str, args: list[Any]) -> Any:
        try:
            return self._scripts.run(self._client(), "gcra", [key], args)
        except self._errors() as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def _eval_async(self, key: str, args: list[Any]) -> Any:
        try:
            client = await self._async.get()
            return await self._scripts.run_async(client, "gcra", [key], args)
        except self._errors() as exc:
            raise StorageUnavailableError(str(exc)) from exc
