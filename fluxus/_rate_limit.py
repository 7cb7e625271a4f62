"""``@fluxus.rate_limit``: at most so many calls per period, over limits.

Which algorithm counts the calls depends on the limit's form:

- a number (calls per second) is a **token bucket** of ``burst`` tokens,
  kept by fluxus as GCRA (see :mod:`fluxus._rate_limit_stores`) in memory or
  atomically in Redis: one number per bucket and key, exact, and a caller
  that may wait reserves its slot, so waiters are served in order;
- a string in limits' notation (``"100 per minute; 10 per second"``) is
  counted by limits itself, with its ``fixed-window`` strategy by default
  (one counter per item and key, as in limits and Flask-Limiter; up to twice
  the amount can pass around a window's end), or ``sliding-window-counter``
  (two counters, smoother) or ``moving-window`` (exact, one entry per
  admitted call); ``strategy="token-bucket"`` turns each item ``N per P``
  into a bucket of ``N`` tokens refilled at ``N / P`` per second instead.

The configuration lives in one immutable :class:`_Plan` swapped whole by
:meth:`RateLimiter.set_limit` and :meth:`RateLimiter.set_burst`, so a call
always sees one consistent limit. One small sync driver and one small async
driver apply the storage's answer: go, wait for the reserved slot, wait and
ask again (windows), or raise :class:`~fluxus.RateLimitExceeded` at once when
the wait would outlast the caller's timeout or enclosing deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, NoReturn

import limits
import limits.util
from limits._storage_scheme import SCHEMES

from ._config import CONFIG, default_storage, track
from ._core import (
    RATE_LIMIT,
    Policy,
    mask_password,
    qualified_name,
    to_seconds,
    type_name,
)
from ._deadline import DEADLINE, effective_wait, remaining, wait_async, wait_sync
from ._rate_limit_stores import (
    ADMITTED,
    REDIS_SCHEMES,
    TOKEN_BUCKET_SCHEMES,
    Bucket,
    LimitsWindows,
    MemoryTokenBuckets,
    RedisTokenBuckets,
    Reservation,
    StorageUnavailableError,
)
from .exceptions import RateLimitExceeded
from .instrumentation._events import (
    RateLimited,
    RateLimitStorageRecovered,
    RateLimitStorageUnavailable,
)
from .instrumentation._hooks import emit
from .instrumentation._observe import WATCH, observe_async, observe_sync, outside

TOKEN_BUCKET = "token-bucket"  # noqa: S105 - a strategy, not a password
WINDOW_STRATEGIES = ("sliding-window-counter", "fixed-window", "moving-window")
STRATEGIES = (TOKEN_BUCKET, *WINDOW_STRATEGIES)
DEFAULT_STRING_STRATEGY = "fixed-window"
DEFAULT_KEY_PREFIX = "fluxus:ratelimit"

#: Seconds an unreachable storage is left alone before it is tried again.
STORAGE_RETRY_INTERVAL = 1.0


class _UseDefault:
    """The default of ``acquire(timeout=...)``: the policy's own timeout."""

    def __repr__(self) -> str:
        return "<the policy's timeout>"


_POLICY_TIMEOUT: Final = _UseDefault()

Limit = float | int | str

_STORES_LOCK = threading.Lock()
_STORES: dict[tuple[str, ...], Any] = {}


def _shared_store(ident: tuple[str, ...], make: Callable[[], Any]) -> Any:
    """Return the process-wide store for *ident*: same name, same budget."""
    with _STORES_LOCK:
        store = _STORES.get(ident)
        if store is None:
            store = _STORES[ident] = make()
        return store


def _forget_stores() -> None:  # pragma: no cover - forked children only
    """Start a forked child without its parent's stores, clients and locks."""
    global _STORES_LOCK  # noqa: PLW0603 - the parent's may be held forever
    _STORES_LOCK = threading.Lock()
    _STORES.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_forget_stores)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One consistent configuration: limit, algorithm and where it is counted."""

    limit: Limit
    burst: int | None
    strategy: str
    buckets: tuple[Bucket, ...] = ()
    items: tuple[limits.RateLimitItem, ...] = ()
    store: Any = field(default=None, compare=False)
    #: The store does I/O: the async driver awaits its ``*_async`` methods.
    io: bool = False
    #: The burst was given, not derived from the rate: a new rate keeps it.
    explicit_burst: bool = False

    @property
    def spec(self) -> tuple[Any, ...]:
        return self.buckets or self.items


class _Pending:
    """The store of a plan whose storage is not built yet.

    Storages are built on first use, not when the decorator runs: the
    default storage may not be known yet (a web app reads its configuration
    later), and a process that forks (gunicorn) must not hand its
    connections, locks or timer threads to its children. The first call
    through this stand-in builds the real store and swaps the limiter's plan,
    so every later call goes straight to the real store.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def take(self, key: str, spec: Any, max_wait: float) -> Reservation:
        store = self._limiter._resolve().store  # noqa: SLF001 - its own limiter
        answer: Reservation = store.take(key, spec, max_wait)
        return answer

    def peek(self, key: str, spec: Any) -> float:
        return float(self._limiter._resolve().store.peek(key, spec))  # noqa: SLF001

    def refund(self, key: str, spec: Any, token: object) -> None:
        self._limiter._resolve().store.refund(key, spec, token)  # noqa: SLF001

    async def take_async(self, key: str, spec: Any, max_wait: float) -> Reservation:
        plan = self._limiter._resolve()  # noqa: SLF001 - its own limiter
        answer: Reservation
        if plan.io:
            answer = await plan.store.take_async(key, spec, max_wait)
        else:
            answer = plan.store.take(key, spec, max_wait)
        return answer

    async def peek_async(self, key: str, spec: Any) -> float:
        plan = self._limiter._resolve()  # noqa: SLF001 - its own limiter
        if plan.io:
            return float(await plan.store.peek_async(key, spec))
        return float(plan.store.peek(key, spec))

    async def refund_async(self, key: str, spec: Any, token: object) -> None:
        plan = self._limiter._resolve()  # noqa: SLF001 - its own limiter
        if plan.io:
            await plan.store.refund_async(key, spec, token)
        else:
            plan.store.refund(key, spec, token)


def _parse_limit(limit: object) -> tuple[float | None, list[limits.RateLimitItem]]:
    """Return ``(rate, [])`` for a number or ``(None, items)`` for a string."""
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        if not math.isfinite(limit) or limit <= 0:
            msg = (
                f"limit must be a finite number of calls per second > 0, got {limit!r}"
            )
            raise ValueError(msg)
        return float(limit), []
    if not isinstance(limit, str):
        msg = (
            "limit must be a rate string such as '10/second' or a number of "
            f"calls per second, got {limit!r}"
        )
        raise TypeError(msg)
    try:
        items = limits.util.parse_many(limit)
    except ValueError:
        msg = (
            f"limit must be a rate in limits' notation such as '10/second' or "
            f"'100 per minute; 10 per second', got {limit!r}"
        )
        raise ValueError(msg) from None
    for item in items:
        if item.amount < 1:
            msg = f"limit must allow at least 1 call per period, got {limit!r}"
            raise ValueError(msg)
    return None, items


def _check_burst(burst: object) -> int | None:
    if burst is None:
        return None
    if not isinstance(burst, int) or isinstance(burst, bool):
        msg = f"burst must be an int (tokens) or None, got {burst!r}"
        raise TypeError(msg)
    if burst < 1:
        msg = f"burst must be >= 1 token, got {burst!r}"
        raise ValueError(msg)
    return burst


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    return to_seconds(timeout, "timeout", allow_none=True)


def check_storage(storage: object, param: str = "storage") -> str:
    """Return *storage* if it is a limits storage URI fluxus can use.

    Raises:
        TypeError: If *storage* is not a string.
        ValueError: If its scheme is unknown, or needs a package that is
            not installed.
    """
    if not isinstance(storage, str):
        msg = (
            f"{param} must be a limits storage URI such as 'memory://', got {storage!r}"
        )
        raise TypeError(msg)
    scheme = urllib.parse.urlsplit(storage).scheme
    if scheme not in SCHEMES or scheme.startswith("async+"):
        known = ", ".join(sorted(s for s in SCHEMES if not s.startswith("async+")))
        msg = (
            f"{param} has an unknown scheme {scheme!r} in {mask_password(storage)!r}; "
            f"use one of {known} (async functions use the async storages "
            "on their own)"
        )
        raise ValueError(msg)
    if scheme in REDIS_SCHEMES and importlib.util.find_spec("redis") is None:
        msg = (
            f"{param} {mask_password(storage)!r} needs the redis package: "
            "pip install 'fluxus[redis]'"
        )
        raise ValueError(msg)
    return storage


class RateLimiter(Policy):
    """Admit at most so many calls per period; see :func:`rate_limit`."""

    _kind: ClassVar[str] = "rate_limit"
    _rank: ClassVar[int] = RATE_LIMIT

    def __init__(
        self,
        limit: Limit,
        *,
        burst: int | None = None,
        timeout: float | None = 0.0,
        key: Callable[..., str] | None = None,
        name: str | None = None,
        storage: str | None = None,
        strategy: str | None = None,
        fail_open: bool = True,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Build the policy; see :func:`rate_limit` for the parameters.

        Args:
            limit: See :func:`rate_limit`.
            burst: See :func:`rate_limit`.
            timeout: See :func:`rate_limit`.
            key: See :func:`rate_limit`.
            name: See :func:`rate_limit`.
            storage: See :func:`rate_limit`.
            strategy: See :func:`rate_limit`.
            fail_open: See :func:`rate_limit`.
            key_prefix: See :func:`rate_limit`.
            clock: Monotonic seconds for an in-memory token bucket of its
                own (tests use a fake clock); ``None`` shares the process's.
        """
        super().__init__(name)
        if key is not None and not callable(key):
            msg = f"key must be a callable returning a string, or None, got {key!r}"
            raise TypeError(msg)
        if strategy is not None and strategy not in STRATEGIES:
            choices = ", ".join(STRATEGIES)
            msg = f"strategy must be one of {choices} or None, got {strategy!r}"
            raise ValueError(msg)
        if not isinstance(key_prefix, str) or not key_prefix:
            msg = f"key_prefix must be a non-empty string, got {key_prefix!r}"
            raise TypeError(msg)
        if clock is not None and not callable(clock):
            msg = f"clock must be a callable returning seconds, got {clock!r}"
            raise TypeError(msg)
        self.timeout = _check_timeout(timeout)
        self.fail_open = bool(fail_open)
        self.key_prefix = key_prefix
        self._key = key
        #: The storage given to the policy, or ``None``: the default storage.
        self._given = None if storage is None else check_storage(storage)
        #: The storage in use: ``None`` until the first call (and after a fork).
        self._storage: str | None = None
        self._scheme = ""
        self._strategy = strategy
        self._clock = clock
        self._own_store: MemoryTokenBuckets | None = None
        self._pending = _Pending(self)
        self._resolve_lock = threading.Lock()
        self._down_until = 0.0
        self._set_key_heads()
        self._plan = self._make_plan(limit, _check_burst(burst))
        track(self)

    # -- configuration --------------------------------------------------

    @property
    def limit(self) -> Limit:
        """The limit, as given."""
        return self._plan.limit

    @property
    def burst(self) -> int | None:
        """The bucket's capacity for a numeric limit, else ``None``."""
        return self._plan.burst

    @property
    def strategy(self) -> str:
        """The algorithm counting calls: ``token-bucket`` or a limits window."""
        return self._plan.strategy

    @property
    def storage(self) -> str:
        """The storage URI, its password masked.

        Without ``storage=``, the default storage (``"memory://"`` unless a
        web integration set ``FLUXUS_STORAGE_URI``).
        """
        return mask_password(self._storage or self._given or default_storage())

    def set_limit(self, limit: Limit) -> None:
        """Replace the limit; same forms as ``limit`` in :func:`rate_limit`.

        A burst set for a numeric limit is kept when the new limit is numeric.

        Raises:
            TypeError: If *limit* is neither a number nor a string.
            ValueError: If *limit* cannot be parsed or does not fit the strategy.
        """
        burst = self._plan.burst if self._plan.explicit_burst else None
        if isinstance(limit, str):
            burst = None
        self._plan = self._make_plan(limit, burst)

    def set_burst(self, burst: int) -> None:
        """Replace the token bucket's capacity (numeric limits only).

        Raises:
            TypeError: If *burst* is not an int.
            ValueError: If *burst* is below 1, or the limit is not numeric.
        """
        self._plan = self._make_plan(self._plan.limit, _check_burst(burst))

    def _make_plan(self, limit: Limit, burst: int | None) -> _Plan:
        rate, items = _parse_limit(limit)
        strategy = self._strategy or (
            TOKEN_BUCKET if rate is not None else DEFAULT_STRING_STRATEGY
        )
        if burst is not None and (rate is None or strategy != TOKEN_BUCKET):
            msg = (
                f"burst applies to a numeric limit with the token bucket, not to "
                f"limit={limit!r} with strategy={strategy!r}; got burst={burst!r}"
            )
            raise ValueError(msg)
        if strategy == TOKEN_BUCKET:
            return self._token_bucket_plan(limit, rate, items, burst)
        if rate is not None:
            if rate != int(rate):
                msg = (
                    f"strategy={strategy!r} counts whole calls per second; "
                    f"limit={limit!r} needs strategy='token-bucket' or a string"
                )
                raise ValueError(msg)
            items = [limits.RateLimitItemPerSecond(int(rate))]
        return self._attach(
            _Plan(limit=limit, burst=None, strategy=strategy, items=tuple(items))
        )

    def _token_bucket_plan(
        self,
        limit: Limit,
        rate: float | None,
        items: list[limits.RateLimitItem],
        burst: int | None,
    ) -> _Plan:
        if rate is not None:
            capacity = burst if burst is not None else max(1, math.ceil(rate))
            buckets: tuple[Bucket, ...] = (Bucket(1.0 / rate, capacity),)
        else:
            buckets = tuple(
                Bucket(item.get_expiry() / item.amount, item.amount) for item in items
            )
        return self._attach(
            _Plan(
                limit=limit,
                burst=buckets[0].capacity if rate is not None else None,
                explicit_burst=burst is not None,
                strategy=TOKEN_BUCKET,
                buckets=buckets,
            )
        )

    # -- the storage, built on first use ------------------------------------

    def _check_fits(self, plan: _Plan, uri: str) -> None:
        """Raise ValueError unless a token bucket's storage can hold one."""
        scheme = urllib.parse.urlsplit(uri).scheme
        if plan.strategy == TOKEN_BUCKET and scheme not in TOKEN_BUCKET_SCHEMES:
            source = "storage" if self._given else "the default storage"
            msg = (
                f"strategy='token-bucket' needs storage 'memory://' or a Redis URL "
                f"({', '.join(sorted(REDIS_SCHEMES))}), got {source} "
                f"{mask_password(uri)!r}; use a string limit with a window "
                "strategy for other storages"
            )
            raise ValueError(msg)

    def _attach(self, plan: _Plan) -> _Plan:
        """Return *plan* with its store, or with the stand-in until first use."""
        uri = self._storage
        if uri is None:
            if self._given is not None:
                self._check_fits(plan, self._given)
            return dataclasses.replace(plan, store=self._pending, io=True)
        self._check_fits(plan, uri)
        store: Any
        if plan.strategy != TOKEN_BUCKET:
            strategy, prefix = plan.strategy, self.key_prefix
            store = _shared_store(
                (strategy, uri, prefix), lambda: LimitsWindows(uri, strategy, prefix)
            )
        elif self._scheme != "memory":
            store = _shared_store((TOKEN_BUCKET, uri), lambda: RedisTokenBuckets(uri))
        elif self._clock is not None:
            if self._own_store is None:
                self._own_store = MemoryTokenBuckets(self._clock)
            store = self._own_store
        else:
            store = _shared_store((TOKEN_BUCKET, uri), MemoryTokenBuckets)
        return dataclasses.replace(plan, store=store, io=self._scheme != "memory")

    def _resolve(self) -> _Plan:
        """Build the storage on first use; return the plan holding it.

        Raises:
            ValueError: If the default storage cannot hold this limiter's
                token bucket.
        """
        with self._resolve_lock:
            plan = self._plan
            if self._storage is None:
                uri = self._given or default_storage()
                self._check_fits(plan, uri)
                self._storage = uri
                self._scheme = urllib.parse.urlsplit(uri).scheme
                plan = self._plan = self._attach(plan)
            return plan

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the store: after a fork, or when the default storage changes."""
        if forked:  # pragma: no cover - forked children only
            # The parent's lock may be held by a thread the child lacks.
            self._resolve_lock = threading.Lock()
        elif self._given is not None or self._storage is None:
            return
        with self._resolve_lock:
            self._storage = None
            self._scheme = ""
            self._own_store = None
            self._down_until = 0.0
            self._plan = dataclasses.replace(self._plan, store=self._pending, io=True)

    # -- public controls ------------------------------------------------

    def allow(self, key: str | None = None) -> bool:
        """Return whether a call would be admitted now, consuming nothing.

        Args:
            key: The client key, as the ``key`` function would return it.
        """
        plan = self._plan
        if self._storage_resting():
            return self.fail_open
        try:
            wait = plan.store.peek(self._store_key(plan, key or ""), plan.spec)
        except StorageUnavailableError as exc:
            self._storage_failed(exc, self.name)
            return self.fail_open
        self._storage_ok(self.name)
        return bool(wait <= 0)

    async def allow_async(self, key: str | None = None) -> bool:
        """Return whether a call would be admitted now, without blocking the loop."""
        plan = self._plan
        if not plan.io:
            return self.allow(key)
        if self._storage_resting():
            return self.fail_open
        try:
            wait = await plan.store.peek_async(
                self._store_key(plan, key or ""), plan.spec
            )
        except StorageUnavailableError as exc:
            self._storage_failed(exc, self.name)
            return self.fail_open
        self._storage_ok(self.name)
        return bool(wait <= 0)

    def acquire(
        self,
        timeout: float | _UseDefault | None = _POLICY_TIMEOUT,
        key: str | None = None,
    ) -> None:
        """Take one permit, waiting for it up to *timeout* seconds.

        Args:
            timeout: Seconds to wait at most; ``0`` fails fast, ``None`` waits
                as long as needed; by default the policy's ``timeout``.
            key: The client key, as the ``key`` function would return it.

        Raises:
            RateLimitExceeded: If no permit is free within the timeout or the
                enclosing deadline; raised at once, without waiting first.
        """
        self._admit(key or "", self._resolve_timeout(timeout), self.name)

    async def acquire_async(
        self,
        timeout: float | _UseDefault | None = _POLICY_TIMEOUT,  # noqa: ASYNC109 - the contract's parameter
        key: str | None = None,
    ) -> None:
        """Take one permit without blocking the loop; see :meth:`acquire`.

        Raises:
            RateLimitExceeded: If no permit is free within the timeout.
        """
        await self._admit_async(key or "", self._resolve_timeout(timeout), self.name)

    def _resolve_timeout(self, timeout: object) -> float | None:
        if isinstance(timeout, _UseDefault):
            return self.timeout
        return _check_timeout(timeout)

    # -- decisions shared by both drivers ---------------------------------

    def _bind(self, func: Callable[..., Any]) -> None:
        super()._bind(func)
        self._set_key_heads()

    def _set_key_heads(self) -> None:
        # Built once: the name is fixed by the first decorated function.
        self._bucket_head = f"{self.key_prefix}:{self.name}:"
        self._window_head = f"{self.name}/"

    def _store_key(self, plan: _Plan, key: str) -> str:
        return (self._bucket_head if plan.buckets else self._window_head) + key

    def _call_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self._key is not None  # noqa: S101 - only called when there is one
        value = self._key(*args, **kwargs)
        if not isinstance(value, str):
            msg = (
                f"the key function of rate limit {self.name!r} must return a str, "
                f"got {value!r}"
            )
            raise TypeError(msg)
        return value

    @staticmethod
    def _budget(timeout: float | None) -> float:
        """Return how long a caller may wait: its timeout, its deadline."""
        budget = math.inf if timeout is None else timeout
        if DEADLINE.get() is not None and not CONFIG.testing.active:
            budget = min(budget, remaining() or 0.0)
        return budget

    def _reject(self, function: str, wait: float, timeout: float | None) -> NoReturn:
        next(self._counters.rejections)
        emit(
            RateLimited(
                policy=self.name, function=function, retry_after=wait, timeout=timeout
            )
        )
        raise RateLimitExceeded(self.name, wait)

    def _storage_resting(self) -> bool:
        return bool(self._down_until) and time.monotonic() < self._down_until

    def _resting_answer(self) -> Reservation:
        if self.fail_open:
            return ADMITTED
        return Reservation(admitted=False, wait=STORAGE_RETRY_INTERVAL)

    def _storage_failed(self, exc: StorageUnavailableError, function: str) -> None:
        self._down_until = time.monotonic() + STORAGE_RETRY_INTERVAL
        message = str(exc)
        password = urllib.parse.urlsplit(self.storage).password
        if password:
            message = message.replace(password, "***")
        cause = exc.__cause__ or exc
        emit(
            RateLimitStorageUnavailable(
                policy=self.name,
                function=function,
                storage=self.storage,
                fail_open=self.fail_open,
                error_type=type_name(type(cause)),
                error_message=message,
            )
        )

    def _storage_ok(self, function: str) -> None:
        if self._down_until:
            self._down_until = 0.0
            emit(
                RateLimitStorageRecovered(
                    policy=self.name, function=function, storage=self.storage
                )
            )

    # -- the sync driver --------------------------------------------------

    def _take(self, plan: _Plan, key: str, budget: float, function: str) -> Reservation:
        if self._down_until and self._storage_resting():
            return self._resting_answer()
        try:
            answer: Reservation = plan.store.take(
                self._store_key(plan, key), plan.spec, budget
            )
        except StorageUnavailableError as exc:
            self._storage_failed(exc, function)
            return self._resting_answer()
        if self._down_until:
            self._storage_ok(function)
        return answer

    def _admit(self, key: str, timeout: float | None, function: str) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if DEADLINE.get() is None:  # the usual case, spared a call
            budget = math.inf if timeout is None else timeout
        else:
            budget = self._budget(timeout)
        answer = self._take(plan, key, budget, function)
        if answer is ADMITTED:
            return
        until = time.monotonic() + budget
        while not answer.admitted:
            if answer.wait > budget:
                self._reject(function, answer.wait, timeout)
            if not effective_wait(answer.wait):
                return  # testing mode: the window would have reset by now
            wait_sync(answer.wait)
            budget = max(0.0, until - time.monotonic())
            answer = self._take(plan, key, budget, function)
        if answer.wait > 0:
            try:
                wait_sync(answer.wait)
            except BaseException:
                self._refund(plan, key, answer)
                raise

    def _refund(self, plan: _Plan, key: str, answer: Reservation) -> None:
        # Should the storage be gone, the slot expires with its key.
        with contextlib.suppress(StorageUnavailableError):
            plan.store.refund(self._store_key(plan, key), plan.spec, answer.token)

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        function = qualified_name(func)
        admit = self._admit
        call_key = self._call_key if self._key is not None else None

        def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(rate_limit_wrapper):
                return observe_sync(self, function, rate_limit_wrapper, args, kwargs)
            admit(call_key(args, kwargs) if call_key else "", self.timeout, function)
            return func(*args, **kwargs)

        return rate_limit_wrapper

    # -- the async driver -------------------------------------------------

    async def _take_async(
        self, plan: _Plan, key: str, budget: float, function: str
    ) -> Reservation:
        if not plan.io:
            return self._take(plan, key, budget, function)
        if self._storage_resting():
            return self._resting_answer()
        try:
            answer: Reservation = await plan.store.take_async(
                self._store_key(plan, key), plan.spec, budget
            )
        except StorageUnavailableError as exc:
            self._storage_failed(exc, function)
            return self._resting_answer()
        self._storage_ok(function)
        return answer

    async def _admit_async(
        self,
        key: str,
        timeout: float | None,  # noqa: ASYNC109 - a wait budget, not an I/O timeout
        function: str,
    ) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        budget = self._budget(timeout)
        answer = await self._take_async(plan, key, budget, function)
        if answer is ADMITTED:
            return
        until = time.monotonic() + budget
        while not answer.admitted:
            if answer.wait > budget:
                self._reject(function, answer.wait, timeout)
            if not effective_wait(answer.wait):
                return  # testing mode: the window would have reset by now
            await wait_async(answer.wait)
            budget = max(0.0, until - time.monotonic())
            answer = await self._take_async(plan, key, budget, function)
        if answer.wait > 0:
            try:
                await wait_async(answer.wait)
            except BaseException:
                await self._refund_async(plan, key, answer)
                raise

    async def _refund_async(self, plan: _Plan, key: str, answer: Reservation) -> None:
        if not plan.io:
            self._refund(plan, key, answer)
            return
        with contextlib.suppress(StorageUnavailableError):
            await plan.store.refund_async(
                self._store_key(plan, key), plan.spec, answer.token
            )

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        admit = self._admit_async
        call_key = self._call_key if self._key is not None else None

        async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(rate_limit_wrapper):
                return await observe_async(
                    self, function, rate_limit_wrapper, args, kwargs
                )
            await admit(
                call_key(args, kwargs) if call_key else "", self.timeout, function
            )
            return await func(*args, **kwargs)

        return rate_limit_wrapper


def rate_limit(
    limit: Limit,
    *,
    burst: int | None = None,
    timeout: float | None = 0.0,
    key: Callable[..., str] | None = None,
    name: str | None = None,
    storage: str | None = None,
    strategy: str | None = None,
    fail_open: bool = True,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> RateLimiter:
    """Return a policy that admits at most so many calls per period.

    Args:
        limit: A rate in limits' notation (``"10/second"``,
            ``"100 per minute; 10 per second"``: every part must admit the
            call) or a number of calls per second.
        burst: For a numeric limit, the token bucket's capacity: the bucket
            starts full and refills continuously at the rate, one token per
            call. By default the rate rounded up, at least 1.
        timeout: How long a caller may wait for a permit: ``0`` fails fast,
            ``None`` waits as long as needed (never past an enclosing
            :func:`fluxus.timeout` deadline). When the wait would be longer,
            :class:`~fluxus.RateLimitExceeded` is raised at once.
        key: ``key(*args, **kwargs) -> str`` receives the call's arguments and
            names the client; each client has its own budget.
        name: Limiters with the same name and storage share one budget; by
            default the first decorated function's ``module.qualname``.
        storage: A limits storage URI: ``"memory://"`` (this process),
            ``"redis://host:port/db"`` (every process using it), or any other
            limits storage for string limits with a window strategy. Storage
            I/O gives up after ``socket_timeout`` (0.5 s unless the URL's
            query sets it). ``None`` (the default) is the default storage:
            ``"memory://"``, unless a web integration was given
            ``FLUXUS_STORAGE_URI``; it is looked up on the first call, when
            the app's configuration is known. The storage is built on first
            use and again in a forked child, which shares nothing with its
            parent (in memory, a child starts with full buckets).
        strategy: ``"token-bucket"`` (default for numbers; memory or Redis),
            or one of limits' ``"fixed-window"`` (default for strings),
            ``"sliding-window-counter"``, ``"moving-window"``.
        fail_open: While the storage is unreachable, admit calls (``True``,
            the default) or reject them with ``retry_after`` 1 s (``False``).
            The storage is tried again once a second.
        key_prefix: The prefix of every storage key.

    Returns:
        A :class:`RateLimiter` policy; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *limit* cannot be parsed, *burst* or *timeout* is out
            of range, or the storage scheme or strategy is unknown or unfit.
    """
    return RateLimiter(
        limit,
        burst=burst,
        timeout=timeout,
        key=key,
        name=name,
        storage=storage,
        strategy=strategy,
        fail_open=fail_open,
        key_prefix=key_prefix,
    )
