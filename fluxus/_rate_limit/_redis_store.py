"""Token buckets in Redis: GCRA in one Lua script, on Redis's clock."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from typing import Any

from fluxus._aio import asyncio_only, in_background, shielded
from fluxus._redis import PerLoop, async_client, sync_client

from ._gcra import ADMITTED, Bucket, Reservation, StorageUnavailableError

#: Seconds a storage I/O may block before it counts as an outage.
DEFAULT_SOCKET_TIMEOUT = 0.5

#: GCRA in Lua: the same arithmetic as :func:`reserve`, on Redis's clock, in
#: one atomic step. KEYS[1] is a hash with one TAT field per bucket.
#: ARGV: mode ("take", "peek" or "refund"), max_wait, the number of buckets,
#: then interval and capacity per bucket, then (refund) the reserved TATs.
#: A bucket's field is named after its interval and capacity, so a new limit
#: starts full instead of inheriting a debt counted at another rate.
_GCRA_LUA = """
local key = KEYS[1]
local mode = ARGV[1]
local max_wait = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local intervals, capacities, fields, tats = {}, {}, {}, {}
for i = 1, n do
  intervals[i] = tonumber(ARGV[2 + 2 * i])
  capacities[i] = tonumber(ARGV[3 + 2 * i])
  fields[i] = 'tat:' .. ARGV[2 + 2 * i] .. ':' .. ARGV[3 + 2 * i]
  tats[i] = tonumber(redis.call('HGET', key, fields[i])) or now
end
if mode == 'refund' then
  for i = 1, n do
    if redis.call('HGET', key, fields[i]) ~= ARGV[3 + 2 * n + i] then
      return 0
    end
  end
  for i = 1, n do
    redis.call('HSET', key, fields[i],
      string.format('%.6f', tats[i] - intervals[i]))
  end
  return 1
end
local start = now
for i = 1, n do
  start = math.max(start, tats[i] - (capacities[i] - 1) * intervals[i])
end
local wait = start - now
-- TATs are stored to the microsecond: absorb the rounding
if wait <= 0.000002 then
  wait = 0
end
if mode == 'peek' or wait > max_wait then
  return {0, string.format('%.6f', wait)}
end
local reply = {1, string.format('%.6f', wait)}
local horizon = 0
for i = 1, n do
  local tat = string.format('%.6f', math.max(tats[i], start) + intervals[i])
  redis.call('HSET', key, fields[i], tat)
  reply[2 + i] = tat
  horizon = math.max(horizon, tonumber(tat) - now)
end
redis.call('PEXPIRE', key, math.ceil(horizon * 1000) + 1000)
return reply
"""


def _bucket_args(buckets: Sequence[Bucket]) -> list[str]:
    args = [str(len(buckets))]
    for bucket in buckets:
        args += [repr(bucket.interval), str(bucket.capacity)]
    return args


#: How the refusal under trio names this storage.
_STORAGE = "the Redis storage of fluxus.rate_limit"


def _max_wait_arg(max_wait: float) -> str:
    return repr(max_wait) if math.isfinite(max_wait) else "1e300"


def _reservation(reply: list[Any]) -> Reservation:
    wait = float(reply[1])
    if not int(reply[0]):
        return Reservation(admitted=False, wait=wait)
    if wait <= 0:
        return ADMITTED
    return Reservation(admitted=True, wait=wait, token=[bytes(t) for t in reply[2:]])


class RedisTokenBuckets:
    """GCRA buckets in Redis, shared by every process using the same keys.

    The sync and the async client run the same script on the same keys, so
    sync and async callers draw on one budget. Clients are made on first use;
    redis-py's own reconnection retries are turned off so that an outage
    costs a caller one socket timeout, not several. The connection pools
    block (up to that timeout) when every connection is busy: redis-py's
    default pool raises at once, which would make a burst of concurrent
    callers look like an outage and, failing open, admit them all.
    """

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._sync: Any = None
        self._async = PerLoop(self._make_aclient)
        self._lock = threading.Lock()

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

    def take(self, key: str, buckets: Sequence[Bucket], max_wait: float) -> Reservation:
        """Reserve a permit in Redis; see :meth:`MemoryTokenBuckets.take`."""
        args = ["take", _max_wait_arg(max_wait), *_bucket_args(buckets)]
        return _reservation(self._eval(key, args))

    async def take_async(
        self, key: str, buckets: Sequence[Bucket], max_wait: float
    ) -> Reservation:
        """Reserve a permit in Redis without blocking the loop."""
        asyncio_only(_STORAGE)
        args = ["take", _max_wait_arg(max_wait), *_bucket_args(buckets)]
        step = asyncio.ensure_future(self._eval_async(key, args))
        try:
            return _reservation(await shielded(step))
        except asyncio.CancelledError:
            # The caller is gone: give back the slot it may have reserved.
            step.add_done_callback(lambda done: self._give_back(done, key, buckets))
            raise

    def _give_back(
        self, step: asyncio.Future[Any], key: str, buckets: Sequence[Bucket]
    ) -> None:
        if step.cancelled() or step.exception() is not None:
            return
        answer = _reservation(step.result())
        if answer.admitted and answer.token is not None:
            in_background(self.refund_async(key, buckets, answer.token))

    def peek(self, key: str, buckets: Sequence[Bucket]) -> float:
        """Return the seconds until *key* would be admitted, consuming nothing."""
        return max(
            0.0, float(self._eval(key, ["peek", "0", *_bucket_args(buckets)])[1])
        )

    async def peek_async(self, key: str, buckets: Sequence[Bucket]) -> float:
        """Return the seconds until *key* would be admitted, without blocking."""
        asyncio_only(_STORAGE)
        reply = await self._eval_async(key, ["peek", "0", *_bucket_args(buckets)])
        return max(0.0, float(reply[1]))

    def refund(self, key: str, buckets: Sequence[Bucket], token: object) -> None:
        """Give back a reserved slot if no later caller has reserved after it."""
        self._eval(key, self._refund_args(buckets, token))

    async def refund_async(
        self, key: str, buckets: Sequence[Bucket], token: object
    ) -> None:
        """Give back a reserved slot without blocking the loop."""
        asyncio_only(_STORAGE)
        await shielded(self._eval_async(key, self._refund_args(buckets, token)))

    @staticmethod
    def _refund_args(buckets: Sequence[Bucket], token: object) -> list[Any]:
        assert isinstance(token, list)  # noqa: S101 - take() made it
        return ["refund", "0", *_bucket_args(buckets), *token]

    def _eval(self, key: str, args: list[Any]) -> Any:
        try:
            return self._client().eval(_GCRA_LUA, 1, key, *args)
        except self._errors() as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def _eval_async(self, key: str, args: list[Any]) -> Any:
        try:
            client = await self._async.get()
            return await client.eval(_GCRA_LUA, 1, key, *args)
        except self._errors() as exc:
            raise StorageUnavailableError(str(exc)) from exc
