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
import math
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, ClassVar, Final, NoReturn

import limits
import limits.storage
import limits.util

from fluxus._config import CONFIG, default_storage
from fluxus._core import RATE_LIMIT, Policy, qualified_name
from fluxus._deadline import DEADLINE, effective_wait, remaining, wait_async, wait_sync
from fluxus._gate import AdmitGate
from fluxus._lazy import Lazy
from fluxus._redis import StorageHealth, mask_password, scheme_of, url_password
from fluxus._validate import (
    Duration,
    check_callable,
    non_empty_str,
    optional_seconds,
)
from fluxus.exceptions import RateLimitExceeded
from fluxus.instrumentation._events import (
    RateLimited,
    RateLimitStorageRecovered,
    RateLimitStorageUnavailable,
)
from fluxus.instrumentation._hooks import emit
from fluxus.instrumentation._observe import Observe, watch_for

from ._gcra import ADMITTED, Bucket, Reservation, StorageUnavailableError
from ._memory import MemoryTokenBuckets
from ._plan import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_STRING_STRATEGY,
    REDIS_SCHEMES,
    STRATEGIES,
    TOKEN_BUCKET,
    TOKEN_BUCKET_SCHEMES,
    Limit,
    _check_burst,
    _parse_limit,
    _Plan,
    _shared_store,
    check_storage,
)
from ._redis_store import RedisTokenBuckets
from ._windows import LimitsWindows

#: Seconds an unreachable storage is left alone before it is tried again.
STORAGE_RETRY_INTERVAL = 1.0


class _UseDefault:
    """The default of ``acquire(timeout=...)``: the policy's own timeout."""

    def __repr__(self) -> str:
        return "<the policy's timeout>"


_POLICY_TIMEOUT: Final = _UseDefault()


class RateLimiter(Policy):
    """Admit at most so many calls per period; see :func:`rate_limit`."""

    _kind: ClassVar[str] = "rate_limit"
    _rank: ClassVar[int] = RATE_LIMIT
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        limit: Limit,
        *,
        burst: int | None = None,
        timeout: Duration | None = 0.0,
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
        check_callable(key, "key")
        if strategy is not None and strategy not in STRATEGIES:
            choices = ", ".join(STRATEGIES)
            msg = f"strategy must be one of {choices} or None, got {strategy!r}"
            raise ValueError(msg)
        self.key_prefix: str = non_empty_str(key_prefix, "key_prefix")
        check_callable(clock, "clock")
        self.timeout: float | None = optional_seconds(timeout, "timeout")
        self.fail_open: bool = bool(fail_open)
        self._key = key
        #: The storage given to the policy, or ``None``: the default storage.
        self._given = None if storage is None else check_storage(storage)
        self._scheme = ""
        self._strategy = strategy
        self._clock = clock
        self._own_store: MemoryTokenBuckets | None = None
        self._health = self._new_health(None)
        #: The storage URI in use: built on the first call (and after a fork).
        self._uri: Lazy[str] = Lazy(
            self._build_storage,
            follows_default=self._given is None,
            on_forget=self._drop_store,
        )
        self._set_key_heads()
        self._plan = self._make_plan(limit, _check_burst(burst))

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
        return mask_password(self._uri.value or self._given or default_storage())

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
            _Plan(limit=limit, burst=None, strategy=strategy, items=tuple(items)),
            self._uri.value,
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
            ),
            self._uri.value,
        )

    # -- the storage, built on first use ------------------------------------

    def _check_fits(self, plan: _Plan, uri: str) -> None:
        """Raise ValueError unless a token bucket's storage can hold one."""
        if plan.strategy == TOKEN_BUCKET and scheme_of(uri) not in TOKEN_BUCKET_SCHEMES:
            source = "storage" if self._given else "the default storage"
            msg = (
                f"strategy='token-bucket' needs storage 'memory://' or a Redis URL "
                f"({', '.join(sorted(REDIS_SCHEMES))}), got {source} "
                f"{mask_password(uri)!r}; use a string limit with a window "
                "strategy for other storages"
            )
            raise ValueError(msg)

    def _attach(self, plan: _Plan, uri: str | None) -> _Plan:
        """Return *plan* with the store of *uri*, or none until first use."""
        if uri is None:
            if self._given is not None:
                self._check_fits(plan, self._given)
            return dataclasses.replace(plan, store=None, io=True)
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

    def _build_storage(self) -> str:
        """Build the store on first use; return the storage URI.

        Raises:
            ValueError: If the default storage cannot hold this limiter's
                token bucket.
        """
        uri = self._given or default_storage()
        self._check_fits(self._plan, uri)
        self._scheme = scheme_of(uri)
        self._health = self._new_health(uri)
        self._plan = self._attach(self._plan, uri)
        return uri

    def _drop_store(self) -> None:
        self._scheme = ""
        self._own_store = None
        self._health = self._new_health(None)
        self._plan = dataclasses.replace(self._plan, store=None, io=True)

    def _resolve(self) -> _Plan:
        """Return the plan, its store built."""
        self._uri.get()
        return self._plan

    def _new_health(self, uri: str | None) -> StorageHealth:
        # The retry interval is read here, so tests can shorten it.
        return StorageHealth(
            fail_open=self.fail_open,
            retry_interval=STORAGE_RETRY_INTERVAL,
            on_down=self._storage_down,
            on_up=self._storage_up,
            secret=None if uri is None else url_password(uri),
            every_failure=True,
        )

    # -- public controls ------------------------------------------------

    def allow(self, key: str | None = None) -> bool:
        """Return whether a call would be admitted now, consuming nothing.

        Args:
            key: The client key, as the ``key`` function would return it.
        """
        plan = self._plan if self._plan.store is not None else self._resolve()
        if self._health.resting():
            return self.fail_open
        try:
            wait = plan.store.peek(self._store_key(plan, key or ""), plan.spec)
        except StorageUnavailableError as exc:
            return self._unreachable_peek(exc)
        return self._peeked(wait)

    async def allow_async(self, key: str | None = None) -> bool:
        """Return whether a call would be admitted now, without blocking the loop."""
        plan = self._plan if self._plan.store is not None else self._resolve()
        if not plan.io:
            return self.allow(key)
        if self._health.resting():
            return self.fail_open
        try:
            wait = await plan.store.peek_async(
                self._store_key(plan, key or ""), plan.spec
            )
        except StorageUnavailableError as exc:
            return self._unreachable_peek(exc)
        return self._peeked(wait)

    def _unreachable_peek(self, exc: StorageUnavailableError) -> bool:
        self._health.failed(exc.__cause__ or exc, self.name)
        return self.fail_open

    def _peeked(self, wait: float) -> bool:
        self._health.answered(self.name)
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
        return optional_seconds(timeout, "timeout")

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

    def _resting_answer(self) -> Reservation:
        if self.fail_open:
            return ADMITTED
        return Reservation(admitted=False, wait=self._health.retry_interval)

    def _storage_down(self, function: str, error_type: str, message: str) -> None:
        emit(
            RateLimitStorageUnavailable(
                policy=self.name,
                function=function,
                storage=self.storage,
                fail_open=self.fail_open,
                error_type=error_type,
                error_message=message,
            )
        )

    def _storage_up(self, function: str) -> None:
        emit(
            RateLimitStorageRecovered(
                policy=self.name, function=function, storage=self.storage
            )
        )

    def _unreachable(self, exc: StorageUnavailableError, function: str) -> Reservation:
        self._health.failed(exc.__cause__ or exc, function)
        return self._resting_answer()

    def _waiting(
        self, answer: Reservation, budget: float, timeout: float | None, function: str
    ) -> Generator[_Step, Reservation | None, None]:
        """Decide what a caller refused or told to wait does, step by step.

        The sync and the async driver run this one decision: it yields
        ``("take", budget)`` (the driver answers with the storage's
        :class:`Reservation`), ``("wait", seconds)`` and ``("refund",
        answer)``; a wait that raises (a cancellation) is thrown back in,
        so that a reserved slot is given back before it propagates.
        """
        until = time.monotonic() + budget
        while not answer.admitted:
            if answer.wait > budget:
                self._reject(function, answer.wait, timeout)
            if not effective_wait(answer.wait):
                return  # testing mode: the window would have reset by now
            yield _WAIT, answer.wait
            budget = max(0.0, until - time.monotonic())
            taken = yield _TAKE, budget
            assert taken is not None  # noqa: S101 - the drivers answer takes
            answer = taken
        if answer.wait > 0:
            try:
                yield _WAIT, answer.wait
            except BaseException:
                yield _REFUND, answer
                raise

    # -- the sync driver --------------------------------------------------

    def _take(self, plan: _Plan, key: str, budget: float, function: str) -> Reservation:
        health = self._health
        if health.down_until is not None and health.resting():
            return self._resting_answer()
        try:
            answer: Reservation = plan.store.take(
                self._store_key(plan, key), plan.spec, budget
            )
        except StorageUnavailableError as exc:
            return self._unreachable(exc, function)
        if health.down_until is not None:
            health.answered(function)
        return answer

    def _admit(self, key: str, timeout: float | None, function: str) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if plan.store is None:
            plan = self._resolve()
        if DEADLINE.get() is None:  # the usual case, spared a call
            budget = math.inf if timeout is None else timeout
        else:
            budget = self._budget(timeout)
        answer = self._take(plan, key, budget, function)
        if answer is ADMITTED:
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            try:
                if kind is _TAKE:
                    reply = self._take(plan, key, value, function)
                elif kind is _WAIT:
                    wait_sync(value)
                else:
                    self._refund(plan, key, value)
            except BaseException as exc:  # noqa: BLE001 - the decision re-raises it
                step = steps.throw(exc)
                continue
            step = _send(steps, reply)

    def _refund(self, plan: _Plan, key: str, answer: Reservation) -> None:
        # Should the storage be gone, the slot expires with its key.
        with contextlib.suppress(StorageUnavailableError):
            plan.store.refund(self._store_key(plan, key), plan.spec, answer.token)

    def _gate(self, func: Callable[..., Any]) -> RateLimitGate:
        return RateLimitGate(self, qualified_name(func))

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit
        call_key = self._call_key if self._key is not None else None

        def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            admit(call_key(args, kwargs) if call_key else "", self.timeout, function)
            return func(*args, **kwargs)

        return rate_limit_wrapper

    # -- the async driver -------------------------------------------------

    async def _take_async(
        self, plan: _Plan, key: str, budget: float, function: str
    ) -> Reservation:
        if not plan.io:
            return self._take(plan, key, budget, function)
        if self._health.resting():
            return self._resting_answer()
        try:
            answer: Reservation = await plan.store.take_async(
                self._store_key(plan, key), plan.spec, budget
            )
        except StorageUnavailableError as exc:
            return self._unreachable(exc, function)
        self._health.answered(function)
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
        if plan.store is None:
            plan = self._resolve()
        budget = self._budget(timeout)
        answer = await self._take_async(plan, key, budget, function)
        if answer is ADMITTED:
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            try:
                if kind is _TAKE:
                    reply = await self._take_async(plan, key, value, function)
                elif kind is _WAIT:
                    await wait_async(value)
                else:
                    await self._refund_async(plan, key, value)
            except BaseException as exc:  # noqa: BLE001 - the decision re-raises it
                step = steps.throw(exc)
                continue
            step = _send(steps, reply)

    async def _refund_async(self, plan: _Plan, key: str, answer: Reservation) -> None:
        if not plan.io:
            self._refund(plan, key, answer)
            return
        with contextlib.suppress(StorageUnavailableError):
            await plan.store.refund_async(
                self._store_key(plan, key), plan.spec, answer.token
            )

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit_async
        call_key = self._call_key if self._key is not None else None

        async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            await admit(
                call_key(args, kwargs) if call_key else "", self.timeout, function
            )
            return await func(*args, **kwargs)

        return rate_limit_wrapper


class RateLimitGate(AdmitGate):
    """The limiter's gate for one function, as ``fluxus.stack`` runs it."""

    __slots__ = ("_call_key", "_function", "_limiter")

    def __init__(self, limiter: RateLimiter, function: str) -> None:
        self._limiter = limiter
        self._function = function
        has_key = limiter._key is not None  # noqa: SLF001 - its own module
        self._call_key = limiter._call_key if has_key else None  # noqa: SLF001

    def admit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        limiter, call_key = self._limiter, self._call_key
        limiter._admit(  # noqa: SLF001 - its own module
            call_key(args, kwargs) if call_key else "", limiter.timeout, self._function
        )

    async def admit_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Same as :meth:`admit`, without blocking the event loop."""
        limiter, call_key = self._limiter, self._call_key
        await limiter._admit_async(  # noqa: SLF001 - its own module
            call_key(args, kwargs) if call_key else "", limiter.timeout, self._function
        )


_TAKE: Final = "take"
_WAIT: Final = "wait"
_REFUND: Final = "refund"
#: One step of :meth:`RateLimiter._waiting`: what to do, and with what.
_Step = tuple[str, Any]


def _send(
    steps: Generator[_Step, Reservation | None, None], reply: Reservation | None
) -> _Step | None:
    """Answer the current step; return the next one, ``None`` at the end."""
    try:
        return steps.send(reply)
    except StopIteration:
        return None


def rate_limit(
    limit: Limit,
    *,
    burst: int | None = None,
    timeout: Duration | None = 0.0,
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
