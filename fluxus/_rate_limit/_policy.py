"""``@fluxus.rate_limit``: at most so many calls per period, over limits.

Which algorithm counts the calls depends on the limit's form:

- a number (calls per second) is a **token bucket** of ``burst`` tokens,
  kept by fluxus as GCRA (see :mod:`fluxus._rate_limit._gcra`) in memory or
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

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, ClassVar, NoReturn

import limits
import limits.storage
import limits.util

from fluxus._config import CONFIG, default_storage
from fluxus._core import RATE_LIMIT, Policy, qualified_name
from fluxus._deadline import DEADLINE, effective_wait, remaining, wait_async, wait_sync
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

from ._fixed_window import MemoryFixedWindows
from ._gcra import ADMITTED, Bucket, Reservation, StorageUnavailableError
from ._hold import (
    HOLD,
    REFUND,
    TAKE,
    WAIT,
    Step,
    hold,
    hold_async,
    past_deadline,
    refund,
    refund_async,
    send,
)
from ._memory import MemoryTokenBuckets
from ._names import _ANONYMOUS, _own_name, escape
from ._options import (
    _POLICY_TIMEOUT,
    LOCAL,
    Cost,
    FailOpen,
    _UseDefault,
    check_cost,
    check_fail_open,
)
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
from ._queue import Ticket
from ._redis_store import RedisTokenBuckets
from ._stack_gate import RateLimitGate
from ._windows import LimitsWindows

#: Seconds an unreachable storage is left alone before it is tried again.
STORAGE_RETRY_INTERVAL = 1.0


class RateLimiter(Policy):
    """Admit at most so many calls per period.

    ``fluxus.rate_limit`` is this class: decorate functions with an instance,
    or use it as a block (``with limiter:``) or through :meth:`acquire`.

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
        name: Limiters with the same name and storage share one budget (in
            Redis, across processes). Without it a limiter's budget is its
            own: it is named after the first function it decorates
            (``module.qualname``; ``module.qualname#2``, ``#3``, ... for the
            next limiters without a name decorating a function of that name
            in the process, numbered in the order they decorate, so that
            processes running the same code agree), or ``<rate_limit #N>``
            when it only serves blocks and :meth:`~RateLimiter.acquire`.
            Names and keys are escaped in storage keys: no name and key
            pair can reach another pair's budget.
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
            the default), reject them with ``retry_after`` 1 s (``False``),
            or count them in this process at the configured limit
            (``"local"``): each process then admits up to the limit on its
            own, so N processes admit up to N times the limit between them
            until the storage answers again. The storage is tried again
            once a second.
        key_prefix: The prefix of every storage key.
        cost: The tokens a call takes: an int >= 1, or a callable receiving
            the call's arguments and returning one. A cost above what the
            limit admits at once (the burst; a string item's amount) is a
            ``ValueError``.
        clock: Monotonic seconds for an in-memory token bucket of its own
            (tests use a fake clock); ``None`` shares the process's.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *limit* cannot be parsed, *burst* or *timeout* is out
            of range, or the storage scheme or strategy is unknown or unfit.
    """

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
        fail_open: FailOpen = True,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        cost: Cost = 1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Build the policy; the parameters are described on the class."""
        super().__init__(name)
        check_callable(key, "key")
        if strategy is not None and strategy not in STRATEGIES:
            choices = ", ".join(STRATEGIES)
            msg = f"strategy must be one of {choices} or None, got {strategy!r}"
            raise ValueError(msg)
        self.key_prefix: str = non_empty_str(key_prefix, "key_prefix")
        check_callable(clock, "clock")
        self.timeout: float | None = optional_seconds(timeout, "timeout")
        self.fail_open: FailOpen = check_fail_open(fail_open)
        self._cost = check_cost(cost)
        self._local: Any = None  # the in-process store of fail_open="local"
        #: Without ``name=``, the name of this policy object alone.
        self._anonymous = f"<rate_limit #{next(_ANONYMOUS)}>" if name is None else None
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
        if isinstance(self._cost, int):
            self._check_cost_fits(self._plan, self._cost)

    @property
    def name(self) -> str:
        """The policy's name: given, or its own (see :func:`rate_limit`)."""
        return self._name or self._anonymous or super().name

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
        A token bucket keeps the tokens it holds (at most the new burst):
        a new limit never hands out a fresh full bucket (a full one stays
        full, as an unused key's would). Each key's bucket is
        converted at its next call, as it stood at the change (several
        changes between two calls of a key count as the last one).

        Raises:
            TypeError: If *limit* is neither a number nor a string.
            ValueError: If *limit* cannot be parsed or does not fit the strategy.
        """
        burst = self._plan.burst if self._plan.explicit_burst else None
        if isinstance(limit, str):
            burst = None
        plan = self._make_plan(limit, burst)
        if isinstance(self._cost, int):
            self._check_cost_fits(plan, self._cost)
        self._plan = plan

    def set_burst(self, burst: int) -> None:
        """Replace the token bucket's capacity (numeric limits only).

        The bucket keeps the tokens it holds, at most the new capacity.

        Raises:
            TypeError: If *burst* is not an int.
            ValueError: If *burst* is below 1, or the limit is not numeric.
        """
        plan = self._make_plan(self._plan.limit, _check_burst(burst))
        if isinstance(self._cost, int):
            self._check_cost_fits(plan, self._cost)
        self._plan = plan

    def _check_cost_fits(self, plan: _Plan, cost: int) -> None:
        """Raise ValueError if *cost* tokens can never be admitted under *plan*."""
        most = min([b.capacity for b in plan.buckets] + [i.amount for i in plan.items])
        if cost > most:
            msg = (
                f"cost={cost!r} exceeds what rate limit {self.name!r} can ever "
                f"admit at once ({most} tokens with limit={plan.limit!r}, "
                f"burst={plan.burst!r})"
            )
            raise ValueError(msg)

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
        since = self._store_now()
        if rate is not None:
            capacity = burst if burst is not None else max(1, math.ceil(rate))
            buckets: tuple[Bucket, ...] = (Bucket(1.0 / rate, capacity, since),)
        else:
            buckets = tuple(
                Bucket(item.get_expiry() / item.amount, item.amount, since)
                for item in items
            )
        if buckets == self._plan_buckets():
            buckets = self._plan_buckets()  # the same limit again: no change
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

    def _plan_buckets(self) -> tuple[Bucket, ...]:
        plan = getattr(self, "_plan", None)
        return () if plan is None else plan.buckets

    def _store_now(self) -> float:
        """Return the time on the store's clock (``-inf`` before it is built)."""
        if not self._scheme:
            return -math.inf
        if self._scheme == "memory":
            return (self._clock or time.monotonic)()
        return time.time()  # Redis's clock: Unix time

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
        if plan.strategy == "fixed-window" and self._scheme == "memory":
            store = _shared_store(("fixed-window", uri), MemoryFixedWindows)
        elif plan.strategy != TOKEN_BUCKET:
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
            fail_open=self.fail_open is not False,
            retry_interval=STORAGE_RETRY_INTERVAL,
            on_down=self._storage_down,
            on_up=self._storage_up,
            secret=None if uri is None else url_password(uri),
            every_failure=True,
        )

    # -- public controls ------------------------------------------------

    def allow(self, key: str | None = None, cost: int = 1) -> bool:
        """Return whether a call would be admitted now, consuming nothing.

        Args:
            key: The client key, as the ``key`` function would return it.
            cost: The tokens the call would take.
        """
        cost = self._fixed_cost(cost)
        plan = self._plan if self._plan.store is not None else self._resolve()
        if self._health.resting():
            return self._resting_peek(plan, key or "", cost)
        try:
            wait = plan.store.peek(self._store_key(plan, key or ""), plan.spec, cost)
        except StorageUnavailableError as exc:
            return self._unreachable_peek(exc, plan, key or "", cost)
        return self._peeked(wait)

    async def allow_async(self, key: str | None = None, cost: int = 1) -> bool:
        """Return whether a call would be admitted now, without blocking the loop."""
        cost = self._fixed_cost(cost)
        plan = self._plan if self._plan.store is not None else self._resolve()
        if not plan.io:
            return self.allow(key, cost)
        if self._health.resting():
            return self._resting_peek(plan, key or "", cost)
        try:
            wait = await plan.store.peek_async(
                self._store_key(plan, key or ""), plan.spec, cost
            )
        except StorageUnavailableError as exc:
            return self._unreachable_peek(exc, plan, key or "", cost)
        return self._peeked(wait)

    def _resting_peek(self, plan: _Plan, key: str, cost: int) -> bool:
        if self.fail_open == LOCAL:
            store = self._local_store(plan)
            return bool(store.peek(self._store_key(plan, key), plan.spec, cost) <= 0)
        return bool(self.fail_open)

    def _unreachable_peek(
        self, exc: StorageUnavailableError, plan: _Plan, key: str, cost: int
    ) -> bool:
        self._health.failed(exc.__cause__ or exc, self.name)
        return self._resting_peek(plan, key, cost)

    def _peeked(self, wait: float) -> bool:
        self._health.answered(self.name)
        return bool(wait <= 0)

    def acquire(
        self,
        timeout: float | _UseDefault | None = _POLICY_TIMEOUT,
        key: str | None = None,
        cost: int | None = None,
    ) -> None:
        """Take a permit, waiting for it up to *timeout* seconds.

        Args:
            timeout: Seconds to wait at most; ``0`` fails fast, ``None`` waits
                as long as needed; by default the policy's ``timeout``.
            key: The client key, as the ``key`` function would return it.
            cost: The tokens to take; by default the policy's ``cost`` when
                it is an int, else 1.

        Raises:
            RateLimitExceeded: If no permit is free within the timeout or the
                enclosing deadline; raised at once, without waiting first.
            ValueError: If *cost* is below 1 or above what the limit can ever
                admit at once.
        """
        self._admit(
            key or "",
            self._resolve_timeout(timeout),
            self.name,
            self._fixed_cost(cost),
        )

    async def acquire_async(
        self,
        timeout: float | _UseDefault | None = _POLICY_TIMEOUT,  # noqa: ASYNC109 - the contract's parameter
        key: str | None = None,
        cost: int | None = None,
    ) -> None:
        """Take a permit without blocking the loop; see :meth:`acquire`.

        Raises:
            RateLimitExceeded: If no permit is free within the timeout.
        """
        await self._admit_async(
            key or "",
            self._resolve_timeout(timeout),
            self.name,
            self._fixed_cost(cost),
        )

    def __enter__(self) -> None:
        """Take a permit for the block, like :meth:`acquire`."""
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to give back: a permit is spent when it is taken."""

    async def __aenter__(self) -> None:
        """Take a permit for the block, like :meth:`acquire_async`."""
        await self.acquire_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to give back: a permit is spent when it is taken."""

    def _resolve_timeout(self, timeout: object) -> float | None:
        if isinstance(timeout, _UseDefault):
            return self.timeout
        return optional_seconds(timeout, "timeout")

    def _fixed_cost(self, cost: object) -> int:
        """Return the cost of one permit asked for through the controls."""
        if cost is None:
            return self._cost if isinstance(self._cost, int) else 1
        checked = check_cost(cost)
        if not isinstance(checked, int):
            msg = f"cost must be an int >= 1 here, got {cost!r}"
            raise TypeError(msg)
        if checked > 1:
            self._check_cost_fits(self._plan, checked)
        return checked

    def _call_cost(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        cost = self._cost
        if isinstance(cost, int):
            return cost
        value = cost(*args, **kwargs)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = (
                f"the cost function of rate limit {self.name!r} must return an "
                f"int >= 1, got {value!r}"
            )
            raise ValueError(msg)
        self._check_cost_fits(self._plan, value)
        return value

    # -- decisions shared by both drivers ---------------------------------

    def _bind(self, func: Callable[..., Any]) -> None:
        if self._name is None:
            self._name = _own_name(qualified_name(func))
        self._set_key_heads()

    def _set_key_heads(self) -> None:
        # Built once: the name is fixed by the first decorated function.
        name = escape(self.name)
        self._bucket_head = f"{self.key_prefix}:{name}:"
        self._window_head = f"{name}/"

    def _store_key(self, plan: _Plan, key: str) -> str:
        head = self._bucket_head if plan.buckets else self._window_head
        return head + escape(key) if key else head

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

    def _local_store(self, plan: _Plan) -> Any:
        """Return the in-process store counting calls while the storage is down."""
        local = self._local
        if local is None or local[0] is not bool(plan.buckets):
            store = (
                MemoryTokenBuckets()
                if plan.buckets
                else LimitsWindows("memory://", plan.strategy, self.key_prefix)
            )
            local = self._local = (bool(plan.buckets), store)
        return local[1]

    def _resting_answer(
        self, plan: _Plan, key: str, budget: float, cost: int
    ) -> Reservation:
        if self.fail_open == LOCAL:
            store = self._local_store(plan)
            answer: Reservation = store.take(
                self._store_key(plan, key), plan.spec, budget, cost
            )
            return answer
        if self.fail_open:
            return ADMITTED
        return Reservation(admitted=False, wait=self._health.retry_interval)

    def _storage_down(self, function: str, error_type: str, message: str) -> None:
        emit(
            RateLimitStorageUnavailable(
                policy=self.name,
                function=function,
                storage=self.storage,
                fail_open=self.fail_open is not False,
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

    def _unreachable(
        self,
        exc: StorageUnavailableError,
        function: str,
        *,
        plan: _Plan,
        key: str,
        budget: float,
        cost: int,
    ) -> Reservation:
        self._health.failed(exc.__cause__ or exc, function)
        return self._resting_answer(plan, key, budget, cost)

    def _waiting(
        self, answer: Reservation, budget: float, timeout: float | None, function: str
    ) -> Generator[Step, Reservation | None, None]:
        """Decide what a caller refused or told to wait does, step by step.

        The sync and the async driver run this one decision: it yields
        ``("take", budget)`` (the driver answers with the storage's
        :class:`Reservation`), ``("wait", seconds)``, ``("refund", answer)``
        (give a reserved slot back) and ``("hold", answer)``: wait for the
        reserved slot, giving it back (wherever it stands in the queue)
        should the wait be cancelled. A slot due after the enclosing
        deadline is given back and the call rejected at once.
        """
        until = time.monotonic() + budget
        while not answer.admitted:
            if answer.wait > budget:
                self._reject(function, answer.wait, timeout)
            if not effective_wait(answer.wait):
                return  # testing mode: the window would have reset by now
            yield WAIT, answer.wait
            budget = max(0.0, until - time.monotonic())
            taken = yield TAKE, budget
            assert taken is not None  # noqa: S101 - the drivers answer takes
            answer = taken
        ticket = answer.token
        if ticket is None:
            return
        if isinstance(ticket, Ticket) and past_deadline(ticket):
            # The storage step outlasted the budget (a slow Redis, a busy
            # lock): the slot fell due after the enclosing deadline, when
            # the caller (a thread timeout's, say) has gone. Give it back.
            yield REFUND, answer
            self._reject(function, ticket.left(), timeout)
        yield HOLD, answer

    # -- the sync driver --------------------------------------------------

    def _take(
        self, plan: _Plan, key: str, budget: float, function: str, cost: int
    ) -> Reservation:
        health = self._health
        if health.down_until is not None and health.resting():
            return self._resting_answer(plan, key, budget, cost)
        try:
            answer: Reservation = plan.store.take(
                self._store_key(plan, key), plan.spec, budget, cost
            )
        except StorageUnavailableError as exc:
            return self._unreachable(
                exc, function, plan=plan, key=key, budget=budget, cost=cost
            )
        if health.down_until is not None:
            health.answered(function)
        return answer

    def _admit(
        self, key: str, timeout: float | None, function: str, cost: int = 1
    ) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if plan.store is None:
            plan = self._resolve()
        if DEADLINE.get() is None:  # the usual case, spared a call
            budget = math.inf if timeout is None else timeout
        else:
            budget = self._budget(timeout)
        answer = self._take(plan, key, budget, function, cost)
        if answer is ADMITTED:
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            if kind is TAKE:
                reply = self._take(plan, key, value, function, cost)
            elif kind is WAIT:
                wait_sync(value)
            elif kind is REFUND:
                refund(value)
            else:
                hold(value)
            step = send(steps, reply)

    def _gate(self, func: Callable[..., Any]) -> RateLimitGate:
        return RateLimitGate(self, qualified_name(func))

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit
        call_key = self._call_key if self._key is not None else None
        call_cost = self._call_cost if not isinstance(self._cost, int) else None
        cost = self._cost if isinstance(self._cost, int) else 1

        def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            admit(
                call_key(args, kwargs) if call_key else "",
                self.timeout,
                function,
                call_cost(args, kwargs) if call_cost else cost,
            )
            return func(*args, **kwargs)

        return rate_limit_wrapper

    # -- the async driver -------------------------------------------------

    async def _take_async(
        self, plan: _Plan, key: str, budget: float, function: str, cost: int
    ) -> Reservation:
        if not plan.io:
            return self._take(plan, key, budget, function, cost)
        if self._health.resting():
            return self._resting_answer(plan, key, budget, cost)
        try:
            answer: Reservation = await plan.store.take_async(
                self._store_key(plan, key), plan.spec, budget, cost
            )
        except StorageUnavailableError as exc:
            return self._unreachable(
                exc, function, plan=plan, key=key, budget=budget, cost=cost
            )
        self._health.answered(function)
        return answer

    async def _admit_async(
        self,
        key: str,
        timeout: float | None,  # noqa: ASYNC109 - a wait budget, not an I/O timeout
        function: str,
        cost: int = 1,
    ) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if plan.store is None:
            plan = self._resolve()
        budget = self._budget(timeout)
        answer = await self._take_async(plan, key, budget, function, cost)
        if answer is ADMITTED:
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            if kind is TAKE:
                reply = await self._take_async(plan, key, value, function, cost)
            elif kind is WAIT:
                await wait_async(value)
            elif kind is REFUND:
                await refund_async(value)
            else:
                await hold_async(value)
            step = send(steps, reply)

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit_async
        call_key = self._call_key if self._key is not None else None
        call_cost = self._call_cost if not isinstance(self._cost, int) else None
        cost = self._cost if isinstance(self._cost, int) else 1

        async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            await admit(
                call_key(args, kwargs) if call_key else "",
                self.timeout,
                function,
                call_cost(args, kwargs) if call_cost else cost,
            )
            return await func(*args, **kwargs)

        return rate_limit_wrapper


#: The factory is the class itself: ``fluxus.rate_limit(...)`` builds a
#: :class:`RateLimiter`, so the two can never disagree on a parameter.
rate_limit = RateLimiter
