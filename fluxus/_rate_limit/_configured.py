"""A rate limiter's limit, its plan and the storage it is counted in.

The configuration lives in one immutable :class:`_Plan` swapped whole by
:meth:`set_limit` and :meth:`set_burst`, so a call always sees one
consistent limit. The storage is built on first use (and again in a forked
child); while it is unreachable, calls are admitted, refused or counted in
this process, as ``fail_open`` says.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import limits
import limits.storage
import limits.util

from fluxus._config import default_storage
from fluxus._core import Policy
from fluxus._lazy import Lazy
from fluxus._redis import StorageHealth, mask_password, scheme_of, url_password
from fluxus.instrumentation._events import (
    RateLimitStorageRecovered,
    RateLimitStorageUnavailable,
)
from fluxus.instrumentation._hooks import emit

from ._gcra import ADMITTED, Bucket, Reservation, StorageUnavailableError
from ._memory import MemoryTokenBuckets
from ._memory_windows import (
    MemoryFixedWindows,
    MemoryMovingWindows,
    MemorySlidingWindowCounters,
)
from ._names import escape
from ._options import (
    LOCAL,
    Cost,
    FailOpen,
)
from ._plan import (
    DEFAULT_STRING_STRATEGY,
    REDIS_SCHEMES,
    TOKEN_BUCKET,
    TOKEN_BUCKET_SCHEMES,
    Limit,
    _check_burst,
    _parse_limit,
    _Plan,
    _shared_store,
)
from ._redis_store import RedisTokenBuckets
from ._windows import LimitsWindows

#: Seconds an unreachable storage is left alone before it is tried again.
STORAGE_RETRY_INTERVAL = 1.0


#: The window strategies fluxus counts itself in memory (limits' arithmetic).
_MEMORY_WINDOWS: dict[str, type[Any]] = {
    "fixed-window": MemoryFixedWindows,
    "sliding-window-counter": MemorySlidingWindowCounters,
    "moving-window": MemoryMovingWindows,
}


class _Configured(Policy):
    """The limit, its plan and its storage: what :class:`RateLimiter` counts with."""

    # Set by RateLimiter.__init__.
    key_prefix: str
    timeout: float | None
    fail_open: FailOpen
    _plan: _Plan
    _anonymous: str | None
    _strategy: str | None
    _clock: Callable[[], float] | None
    _given: str | None
    _scheme: str
    _own_store: MemoryTokenBuckets | None
    _health: StorageHealth
    _uri: Lazy[str]
    _local: Any
    _cost: Cost
    _key: Callable[..., str] | None
    _bucket_head: str
    _window_head: str

    @property
    def name(self) -> str:
        """The policy's name: given, or its own (see :func:`rate_limit`)."""
        return self._name or self._anonymous or super().name

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
                f"cost must be at most {most} (tokens), what rate limit "
                f"{self.name!r} can ever admit at once with limit={plan.limit!r} "
                f"and burst={plan.burst!r}, got {cost!r}"
            )
            raise ValueError(msg)

    def _make_plan(self, limit: Limit, burst: int | None) -> _Plan:
        rate, items = _parse_limit(limit)
        strategy = self._strategy or (
            TOKEN_BUCKET if rate is not None else DEFAULT_STRING_STRATEGY
        )
        if burst is not None and (rate is None or strategy != TOKEN_BUCKET):
            msg = (
                f"burst must be None with limit={limit!r} and "
                f"strategy={strategy!r} (burst applies to a numeric limit with "
                f"the token bucket), got {burst!r}"
            )
            raise ValueError(msg)
        if strategy == TOKEN_BUCKET:
            return self._token_bucket_plan(limit, rate, items, burst)
        if rate is not None:
            if rate != int(rate):
                msg = (
                    f"limit must be a whole number of calls per second or a "
                    f"string with strategy={strategy!r} (or use "
                    f"strategy='token-bucket'), got {limit!r}"
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

    def _check_fits(self, plan: _Plan, uri: str) -> None:
        """Raise ValueError unless a token bucket's storage can hold one."""
        if plan.strategy == TOKEN_BUCKET and scheme_of(uri) not in TOKEN_BUCKET_SCHEMES:
            source = "storage" if self._given else "the default storage"
            msg = (
                f"{source} must be 'memory://' or a Redis URL "
                f"({', '.join(sorted(REDIS_SCHEMES))}) with strategy='token-bucket' "
                "(use a string limit with a window strategy for other "
                f"storages), got {mask_password(uri)!r}"
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
        if plan.strategy in _MEMORY_WINDOWS and self._scheme == "memory":
            strategy = plan.strategy
            store = _shared_store((strategy, uri), _MEMORY_WINDOWS[strategy])
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

    def _set_key_heads(self) -> None:
        # Built once: the name is fixed by the first decorated function.
        name = escape(self.name)
        self._bucket_head = f"{self.key_prefix}:{name}:"
        self._window_head = f"{name}/"

    def _store_key(self, plan: _Plan, key: str) -> str:
        head = self._bucket_head if plan.buckets else self._window_head
        return head + escape(key) if key else head

    def _new_health(self, uri: str | None) -> StorageHealth:
        # The retry interval is read here, so tests can shorten it.
        return StorageHealth(
            fail_open=self.fail_open is not False,
            retry_interval=STORAGE_RETRY_INTERVAL,
            on_down=self._storage_down,
            on_up=self._storage_up,
            secret=None if uri is None else url_password(uri),
        )

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
