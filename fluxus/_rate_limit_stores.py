"""Where a rate limiter keeps its budget: token buckets and limits' windows.

limits has no token bucket and counts in whole-second windows, so fluxus
adds one: the Generic Cell Rate Algorithm (GCRA), which keeps a single
number per bucket, the *theoretical arrival time* (TAT) at which the bucket
would be full again. :func:`reserve` is the whole arithmetic, pure and
shared by :class:`MemoryTokenBuckets` (a dict behind a lock) and
:class:`RedisTokenBuckets` (the same arithmetic in one Lua script, run
atomically by Redis with Redis's clock). A caller that has to wait reserves
its slot in the schedule before it sleeps, so waiters are served first come,
first served and a newcomer can never overtake them.

String rates with a window strategy go to limits itself through
:class:`LimitsWindows`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import limits
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies
import limits.util

from ._core import in_background, shielded

if TYPE_CHECKING:
    import redis
    import redis.asyncio

#: Seconds a storage I/O may block before it counts as an outage.
DEFAULT_SOCKET_TIMEOUT = 0.5

REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})
TOKEN_BUCKET_SCHEMES = frozenset({"memory", *REDIS_SCHEMES})


class _PerLoop:
    """One asyncio client per event loop, closed when that loop shuts down.

    An asyncio connection belongs to the loop that opened it, and programs
    (tests above all) run several loops one after the other. Each client is
    tied to an async generator started in its loop: ``asyncio.run`` closes
    such generators before it closes the loop, and closing this one closes
    the client, so no connection outlives its loop.
    """

    def __init__(self) -> None:
        self._clients: dict[int, tuple[weakref.ref[Any], Any, Any]] = {}

    async def get(
        self, make: Callable[[], Any], close: Callable[[Any], Awaitable[None]]
    ) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[1]
        client = make()
        closer = _close_at_shutdown(client, close)
        await anext(closer)
        self._clients = {
            key: value
            for key, value in self._clients.items()
            if (other := value[0]()) is not None and not other.is_closed()
        }
        self._clients[id(loop)] = (weakref.ref(loop), client, closer)
        return client


async def _close_at_shutdown(
    client: Any, close: Callable[[Any], Awaitable[None]]
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await close(client)


class StorageUnavailableError(Exception):
    """The storage could not be reached; ``__cause__`` says why."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket: *capacity* tokens, one more every *interval* seconds."""

    interval: float
    capacity: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The storage's answer to one request for a permit.

    Attributes:
        admitted: Whether the permit is granted (possibly after *wait*).
        wait: Seconds until the permit is usable; when not admitted, seconds
            until one is expected to be free.
        token: What :meth:`refund` needs to give a reserved slot back.
    """

    admitted: bool
    wait: float
    token: object = None


ADMITTED = Reservation(admitted=True, wait=0.0)

_TOLERANCE = 1e-9


def reserve(
    tats: Sequence[float],
    buckets: Sequence[Bucket],
    now: float,
    max_wait: float,
) -> tuple[float, list[float] | None]:
    """Decide one request against GCRA buckets: the whole token-bucket arithmetic.

    A bucket of capacity ``b`` refilled one token per ``T`` seconds admits a
    call arriving at ``s`` when its TAT is at most ``s + (b - 1) * T``; the
    call then moves the TAT to ``max(TAT, s) + T``. The call is scheduled at
    the earliest ``s >= now`` every bucket admits.

    Args:
        tats: Each bucket's theoretical arrival time (``-inf`` when fresh).
        buckets: The buckets, all of which must admit the call.
        now: The current time on the storage's clock.
        max_wait: How long the caller accepts to wait.

    Returns:
        ``(wait, new_tats)``: the seconds until the call may run, and the
        TATs to store, or ``None`` when *wait* exceeds *max_wait* (nothing
        is consumed then).
    """
    if len(buckets) == 1:  # a numeric rate: spare it the loops' overhead
        tat, bucket = tats[0], buckets[0]
        start = tat - (bucket.capacity - 1) * bucket.interval
        if start < now:  # noqa: PLR1730 - max() costs a call on this hot path
            start = now
        wait = _wait(start, now)
        if wait > max_wait:
            return wait, None
        new = (tat if tat > start else start) + bucket.interval  # noqa: FURB136
        return wait, [new]
    start = max(
        now,
        *(
            t - (b.capacity - 1) * b.interval
            for t, b in zip(tats, buckets, strict=True)
        ),
    )
    wait = _wait(start, now)
    if wait > max_wait:
        return wait, None
    return wait, [
        max(tat, start) + bucket.interval
        for tat, bucket in zip(tats, buckets, strict=True)
    ]


def _wait(start: float, now: float) -> float:
    """Return ``start - now``, or 0 when only rounding separates them.

    Sums of intervals drift from products by a few ulps; without the
    tolerance a refilled token could be refused by 1e-16 seconds.
    """
    wait = start - now
    return 0.0 if wait <= _TOLERANCE else wait


class MemoryTokenBuckets:
    """GCRA buckets in this process's memory: one float per bucket and key.

    A bucket whose TAT has passed is indistinguishable from a fresh one, so
    such keys are swept away now and then: memory stays proportional to the
    keys active in the last few refill periods, never to the calls made.
    """

    _SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (the buckets the TATs belong to, one TAT per bucket)
        self._state: dict[str, tuple[Sequence[Bucket], list[float]]] = {}
        self._until_sweep = self._SWEEP_EVERY

    def _tats(self, key: str, buckets: Sequence[Bucket]) -> list[float] | None:
        state = self._state.get(key)
        if state is None or (state[0] is not buckets and state[0] != buckets):
            return None  # a fresh key, or a new limit: a full bucket
        return state[1]

    def take(self, key: str, buckets: Sequence[Bucket], max_wait: float) -> Reservation:
        """Reserve a permit for *key* within *max_wait* seconds, or report the wait."""
        with self._lock:
            now = self._clock()
            state = self._state.get(key)
            tats = (
                state[1]
                if state is not None and (state[0] is buckets or state[0] == buckets)
                else None  # a fresh key, or a new limit: a full bucket
            )
            if tats is None:
                tats = [-math.inf] * len(buckets)
                self._until_sweep -= 1
                if self._until_sweep <= 0:
                    self._sweep(now)
            wait, new = reserve(tats, buckets, now, max_wait)
            if new is None:
                return Reservation(admitted=False, wait=wait)
            self._state[key] = (buckets, new)
        if wait <= 0:
            return ADMITTED
        return Reservation(admitted=True, wait=wait, token=new)

    def peek(self, key: str, buckets: Sequence[Bucket]) -> float:
        """Return the seconds until *key* would be admitted, consuming nothing."""
        with self._lock:
            tats = self._tats(key, buckets)
            if tats is None:
                return 0.0
            return reserve(tats, buckets, self._clock(), -1.0)[0]

    def refund(self, key: str, buckets: Sequence[Bucket], token: object) -> None:
        """Give back a reserved slot if no later caller has reserved after it."""
        with self._lock:
            tats = self._tats(key, buckets)
            if tats is not None and tats == token:
                self._state[key] = (
                    buckets,
                    [tat - b.interval for tat, b in zip(tats, buckets, strict=True)],
                )

    def _sweep(self, now: float) -> None:
        self._state = {k: v for k, v in self._state.items() if max(v[1]) > now}
        self._until_sweep = max(self._SWEEP_EVERY, len(self._state))

    def __len__(self) -> int:
        return len(self._state)


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


def _max_wait_arg(max_wait: float) -> str:
    return repr(max_wait) if math.isfinite(max_wait) else "1e300"


def _reservation(reply: list[Any]) -> Reservation:
    wait = float(reply[1])
    if not int(reply[0]):
        return Reservation(admitted=False, wait=wait)
    if wait <= 0:
        return ADMITTED
    return Reservation(admitted=True, wait=wait, token=[bytes(t) for t in reply[2:]])


def _redis_options(uri: str) -> dict[str, Any]:
    """Return client options bounding every storage I/O by a socket timeout."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    options: dict[str, Any] = {}
    for option in ("socket_timeout", "socket_connect_timeout"):
        if option not in query:
            options[option] = DEFAULT_SOCKET_TIMEOUT
    return options


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
        self._uri = uri.replace("redis+unix://", "unix://", 1)
        self._sync: redis.Redis | None = None
        self._async = _PerLoop()
        self._lock = threading.Lock()

    def _client(self) -> redis.Redis:
        if self._sync is None:
            import redis  # noqa: PLC0415 - an optional dependency
            import redis.backoff  # noqa: PLC0415
            import redis.retry  # noqa: PLC0415

            with self._lock:
                if self._sync is None:
                    self._sync = redis.Redis.from_pool(
                        redis.BlockingConnectionPool.from_url(
                            self._uri,
                            timeout=DEFAULT_SOCKET_TIMEOUT,
                            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                            **_redis_options(self._uri),
                        )
                    )
        return self._sync

    def _make_aclient(self) -> redis.asyncio.Redis:
        import redis.asyncio  # noqa: PLC0415 - an optional dependency
        import redis.asyncio.retry  # noqa: PLC0415
        import redis.backoff  # noqa: PLC0415

        return redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(
                self._uri,
                timeout=DEFAULT_SOCKET_TIMEOUT,
                retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
                **_redis_options(self._uri),
            )
        )

    @staticmethod
    async def _close_aclient(client: redis.asyncio.Redis) -> None:
        await client.aclose()

    def _errors(self) -> tuple[type[BaseException], ...]:
        import redis  # noqa: PLC0415

        return (redis.RedisError, OSError)

    def take(self, key: str, buckets: Sequence[Bucket], max_wait: float) -> Reservation:
        """Reserve a permit in Redis; see :meth:`MemoryTokenBuckets.take`."""
        args = ["take", _max_wait_arg(max_wait), *_bucket_args(buckets)]
        return _reservation(self._eval(key, args))

    async def take_async(
        self, key: str, buckets: Sequence[Bucket], max_wait: float
    ) -> Reservation:
        """Reserve a permit in Redis without blocking the loop."""
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
        reply = await self._eval_async(key, ["peek", "0", *_bucket_args(buckets)])
        return max(0.0, float(reply[1]))

    def refund(self, key: str, buckets: Sequence[Bucket], token: object) -> None:
        """Give back a reserved slot if no later caller has reserved after it."""
        self._eval(key, self._refund_args(buckets, token))

    async def refund_async(
        self, key: str, buckets: Sequence[Bucket], token: object
    ) -> None:
        """Give back a reserved slot without blocking the loop."""
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
            client = await self._async.get(self._make_aclient, self._close_aclient)
            return await client.eval(_GCRA_LUA, 1, key, *args)
        except self._errors() as exc:
            raise StorageUnavailableError(str(exc)) from exc


class LimitsWindows:
    """limits' window strategies (fixed, sliding counter, moving) over its storages.

    A call is admitted when every item admits it. limits cannot reserve a
    slot, so a caller that may wait sleeps until the earliest window reset
    limits reports (:meth:`~limits.strategies.RateLimiter.get_window_stats`)
    and asks again; waiters are not ordered among themselves.
    """

    def __init__(self, uri: str, strategy: str, key_prefix: str) -> None:
        self._uri = uri
        self._strategy = strategy
        self._prefix = key_prefix
        self._scheme = urllib.parse.urlsplit(uri).scheme
        self._sync: limits.strategies.RateLimiter | None = None
        self._async = _PerLoop()
        self._shared_memory = self._scheme == "memory"

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"wrap_exceptions": True}
        if self._scheme.startswith(("redis", "valkey")):
            options["key_prefix"] = self._prefix
            options.update(_redis_options(self._uri))
        return options

    def _limiter(self) -> limits.strategies.RateLimiter:
        if self._sync is None:
            storage = limits.storage.storage_from_string(self._uri, **self._options())
            self._sync = limits.strategies.STRATEGIES[self._strategy](storage)
        return self._sync

    def _make_alimiter(self) -> limits.aio.strategies.RateLimiter:
        options = self._options()
        if self._scheme.startswith("redis"):
            options["implementation"] = "redispy"
        storage = limits.storage.storage_from_string(f"async+{self._uri}", **options)
        strategy = limits.aio.strategies.STRATEGIES[self._strategy]
        return strategy(storage)  # type: ignore[abstract]

    @staticmethod
    async def _close_alimiter(limiter: limits.aio.strategies.RateLimiter) -> None:
        bridge = getattr(limiter.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()

    async def _alimiter(self) -> limits.aio.strategies.RateLimiter:
        limiter: limits.aio.strategies.RateLimiter = await self._async.get(
            self._make_alimiter, self._close_alimiter
        )
        return limiter

    def take(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,  # noqa: ARG002 - the stores' shared signature
    ) -> Reservation:
        """Consume a permit now if every item has room, else report the wait."""
        limiter = self._sync or self._limiter()
        try:
            # Several items are tested before any is hit, so that a call
            # refused by one does not spend the others' budget.
            if (len(items) == 1 or all(limiter.test(i, key) for i in items)) and all(
                limiter.hit(item, key) for item in items
            ):
                return ADMITTED
            return self._refused(limiter, key, items)
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def take_async(
        self, key: str, items: Sequence[limits.RateLimitItem], max_wait: float
    ) -> Reservation:
        """Consume a permit now through limits' async storage; see :meth:`take`."""
        if self._shared_memory:
            # One in-memory budget for sync and async callers; no I/O here.
            return self.take(key, items, max_wait)
        limiter = await self._alimiter()
        try:
            if len(items) == 1 or all([await limiter.test(i, key) for i in items]):
                for item in items:  # stops at the first refusal
                    if not await limiter.hit(item, key):
                        break
                else:
                    return ADMITTED
            return await self._refused_async(limiter, key, items)
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    def peek(self, key: str, items: Sequence[limits.RateLimitItem]) -> float:
        """Return 0 when a call would be admitted now, else the expected wait."""
        limiter = self._limiter()
        try:
            if all(limiter.test(item, key) for item in items):
                return 0.0
            return self._refused(limiter, key, items).wait
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def peek_async(
        self, key: str, items: Sequence[limits.RateLimitItem]
    ) -> float:
        """Return the expected wait through limits' async storage; see :meth:`peek`."""
        if self._shared_memory:
            return self.peek(key, items)
        limiter = await self._alimiter()
        try:
            if all([await limiter.test(item, key) for item in items]):
                return 0.0
            return (await self._refused_async(limiter, key, items)).wait
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    def _refused(
        self,
        limiter: limits.strategies.RateLimiter,
        key: str,
        items: Sequence[limits.RateLimitItem],
    ) -> Reservation:
        sliding = self._strategy == "sliding-window-counter"
        waits = [
            _item_wait(
                item,
                limiter.storage.get_sliding_window(  # type: ignore[attr-defined]
                    item.key_for(key), item.get_expiry()
                )
                if sliding
                else limiter.get_window_stats(item, key),
            )
            for item in items
        ]
        return Reservation(admitted=False, wait=max(waits))

    async def _refused_async(
        self,
        limiter: limits.aio.strategies.RateLimiter,
        key: str,
        items: Sequence[limits.RateLimitItem],
    ) -> Reservation:
        sliding = self._strategy == "sliding-window-counter"
        waits = [
            _item_wait(
                item,
                await limiter.storage.get_sliding_window(  # type: ignore[attr-defined]
                    item.key_for(key), item.get_expiry()
                )
                if sliding
                else await limiter.get_window_stats(item, key),
            )
            for item in items
        ]
        return Reservation(admitted=False, wait=max(waits))


def _item_wait(item: limits.RateLimitItem, window: Any) -> float:
    """Return the wait for one item from limits' window answer.

    A refused call waits at least a millisecond, so that a window reported
    to reset "now" cannot make the waiter spin.
    """
    if isinstance(window, limits.util.WindowStats):
        if window.remaining >= 1:
            return 0.001
        return max(0.001, window.reset_time - time.time())
    return max(0.001, sliding_window_wait(item, *window))


def sliding_window_wait(
    item: limits.RateLimitItem,
    previous: int,
    previous_ttl: float,
    current: int,
    current_ttl: float,
) -> float:
    """Return the seconds until limits' sliding window counter has room again.

    limits weighs the previous window's count by the share of it still inside
    the sliding window: ``previous * previous_ttl / period + current``, and
    admits a call while that, rounded down, is below the amount. The weight
    shrinks linearly, so the wait is solved for directly; when the current
    window alone is full, the call waits for it to become the previous one.
    (limits' own ``get_window_stats`` reports the next *decrement*, which can
    be far sooner than the next *admission*.)
    """
    period = item.get_expiry()
    room = item.amount - current
    if room <= 0:
        return max(0.0, current_ttl - period)
    if previous <= 0:
        return 0.0
    return max(0.0, previous_ttl - room * period / previous)
