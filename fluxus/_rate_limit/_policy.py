"""``@fluxus.rate_limit``: at most so many calls per period, over limits.

Which algorithm counts the calls depends on the limit's form:

- a number (calls per second) is a **token bucket** of ``burst`` tokens,
  kept by fluxus as GCRA (see :mod:`fluxus._rate_limit._gcra`) in memory or
  atomically in Redis: one number per bucket and key, exact, and a caller
  that may wait reserves its slot, so waiters are served in order;
- a string in limits' notation (``"100 per minute; 10 per second"``) is
  counted with limits' window arithmetic (by fluxus in memory, see
  :mod:`._memory_windows`; by limits' storages in Redis), with its
  ``fixed-window`` strategy by default
  (one counter per item and key, as in limits and Flask-Limiter; up to twice
  the amount can pass around a window's end), or ``sliding-window-counter``
  (two counters, smoother) or ``moving-window`` (exact, one entry per
  admitted call); ``strategy="token-bucket"`` turns each item ``N per P``
  into a bucket of ``N`` tokens refilled at ``N / P`` per second instead.

The policy is built in layers, one concept a module: :mod:`._configured`
(the limit's plan and the storage it is counted in, outages included),
:mod:`._drivers` (one admission decision, a sync and an async driver) and
this module (the public controls: ``allow``, ``acquire``, block forms).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ClassVar

from fluxus._core import RATE_LIMIT, block_name, factory_of, qualified_name
from fluxus._lazy import Lazy
from fluxus._validate import (
    Duration,
    check_callable,
    non_empty_str,
    not_bare,
    optional_seconds,
)
from fluxus.instrumentation._observe import WATCH, block_ended, block_started

from ._drivers import _Drivers
from ._gcra import StorageUnavailableError
from ._memory import MemoryTokenBuckets
from ._names import _ANONYMOUS, _own_name
from ._options import (
    _POLICY_TIMEOUT,
    Cost,
    FailOpen,
    _UseDefault,
    check_cost,
    check_fail_open,
)
from ._plan import (
    DEFAULT_KEY_PREFIX,
    STRATEGIES,
    Limit,
    _check_burst,
    check_storage,
)
from ._stack_gate import RateLimitGate


class RateLimiter(_Drivers):
    """Admit at most so many calls per period; see :func:`rate_limit`.

    Decorate functions with an instance, or use it as a block
    (``with limiter:``) or through :meth:`acquire`.
    """

    _kind: ClassVar[str] = "rate_limit"
    _rank: ClassVar[int] = RATE_LIMIT

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
        """Build the policy; the parameters are described on :func:`rate_limit`."""
        super().__init__(name)
        not_bare(
            limit,
            "limit",
            "a rate string such as '10/second' or a number of calls per second",
            "@fluxus.rate_limit('10/second')",
        )
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
        #: The observers' states of the blocks open here, innermost last.
        self._observed: ContextVar[tuple[Any, ...]] = ContextVar(
            f"fluxus_rate_limit_blocks_{id(self)}", default=()
        )
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
        """Take a permit for the block, like :meth:`acquire`.

        Events, :attr:`stats` and observers see a block as a decorated call
        of the function the block is written in.
        """
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        if WATCH.observers or self._observed.get():
            self._observed_enter(function)
            return
        self._admit("", self.timeout, function, self._fixed_cost(None))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to give back (a permit is spent when it is taken)."""
        if self._observed.get():
            self._observed_exit(exc)

    async def __aenter__(self) -> None:
        """Take a permit for the block, like :meth:`acquire_async`."""
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        if WATCH.observers or self._observed.get():
            self._observed_start(function)
            try:
                await self._admit_async(
                    "", self.timeout, function, self._fixed_cost(None)
                )
            except BaseException as exc:
                self._observed_exit(exc)
                raise
            return
        await self._admit_async("", self.timeout, function, self._fixed_cost(None))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to give back; see :meth:`__exit__`."""
        if self._observed.get():
            self._observed_exit(exc)

    # Observed blocks. While one is open in this thread or task, every block
    # nested in it is pushed too (observed or not), so each exit pops its own.

    def _observed_start(self, function: str) -> Any:
        observed = block_started(self, function) if WATCH.observers else None
        self._observed.set((*self._observed.get(), observed))
        return observed

    def _observed_enter(self, function: str) -> None:
        self._observed_start(function)
        try:
            self._admit("", self.timeout, function, self._fixed_cost(None))
        except BaseException as exc:
            self._observed_exit(exc)
            raise

    def _observed_exit(self, error: BaseException | None) -> None:
        *outer, observed = self._observed.get()
        self._observed.set(tuple(outer))
        block_ended(observed, error)

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

    def _bind(self, func: Callable[..., Any]) -> None:
        if self._name is None:
            self._name = _own_name(qualified_name(func))
        self._set_key_heads()

    def _gate(self, func: Callable[..., Any]) -> RateLimitGate:
        return RateLimitGate(self, qualified_name(func))


@factory_of(RateLimiter)
def rate_limit() -> None:
    """Return a policy that admits at most so many calls per period.

    A caller that finds no permit waits for one up to *timeout*, or gets
    :class:`~fluxus.RateLimitExceeded` at once when the wait would be
    longer. The policy is also a context manager: ``with limiter:`` and
    ``async with limiter:`` take a permit like
    :meth:`~RateLimiter.acquire`.

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

    Returns:
        A :class:`RateLimiter`; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *limit* cannot be parsed, *burst* or *timeout* is out
            of range, or the storage scheme or strategy is unknown or unfit.
    """
