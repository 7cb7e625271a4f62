"""String rates counted by limits itself: its window strategies and storages."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import limits
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies
import limits.util

from fluxus._redis import PerLoop, client_options

from ._gcra import ADMITTED, Reservation, StorageUnavailableError
from ._redis_store import DEFAULT_SOCKET_TIMEOUT


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
        self._async = PerLoop(self._make_alimiter, self._close_alimiter)
        self._shared_memory = self._scheme == "memory"

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"wrap_exceptions": True}
        if self._scheme.startswith(("redis", "valkey")):
            options["key_prefix"] = self._prefix
            options.update(client_options(self._uri, DEFAULT_SOCKET_TIMEOUT))
            del options["timeout"]
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
        limiter: limits.aio.strategies.RateLimiter = await self._async.get()
        return limiter

    def take(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,  # noqa: ARG002 - the stores' shared signature
        cost: int = 1,
    ) -> Reservation:
        """Consume *cost* now if every item has room, else report the wait."""
        limiter = self._sync or self._limiter()
        try:
            # Several items, or a cost above 1 (limits counts a refused hit),
            # are tested before any is hit, so that a refused call spends
            # nothing.
            if (
                (len(items) == 1 and cost == 1)
                or all(limiter.test(i, key, cost=cost) for i in items)
            ) and all(limiter.hit(item, key, cost=cost) for item in items):
                return ADMITTED
            return self._refused(limiter, key, items)
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def take_async(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,
        cost: int = 1,
    ) -> Reservation:
        """Consume *cost* now through limits' async storage; see :meth:`take`."""
        if self._shared_memory:
            # One in-memory budget for sync and async callers; no I/O here.
            return self.take(key, items, max_wait, cost)
        limiter = await self._alimiter()
        try:
            if (len(items) == 1 and cost == 1) or all(
                [await limiter.test(i, key, cost=cost) for i in items]
            ):
                for item in items:  # stops at the first refusal
                    if not await limiter.hit(item, key, cost=cost):
                        break
                else:
                    return ADMITTED
            return await self._refused_async(limiter, key, items)
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    def peek(
        self, key: str, items: Sequence[limits.RateLimitItem], cost: int = 1
    ) -> float:
        """Return 0 when a call would be admitted now, else the expected wait."""
        limiter = self._limiter()
        try:
            if all(limiter.test(item, key, cost=cost) for item in items):
                return 0.0
            return self._refused(limiter, key, items).wait
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def peek_async(
        self, key: str, items: Sequence[limits.RateLimitItem], cost: int = 1
    ) -> float:
        """Return the expected wait through limits' async storage; see :meth:`peek`."""
        if self._shared_memory:
            return self.peek(key, items, cost)
        limiter = await self._alimiter()
        try:
            if all([await limiter.test(item, key, cost=cost) for item in items]):
                return 0.0
            return (await self._refused_async(limiter, key, items)).wait
        except limits.errors.StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    def _window(self, limiter: Any, key: str, item: limits.RateLimitItem) -> Any:
        """Ask *limiter* about *item*'s window: its answer, or an awaitable of it."""
        if self._strategy == "sliding-window-counter":
            return limiter.storage.get_sliding_window(
                item.key_for(key), item.get_expiry()
            )
        return limiter.get_window_stats(item, key)

    def _refused(
        self,
        limiter: limits.strategies.RateLimiter,
        key: str,
        items: Sequence[limits.RateLimitItem],
    ) -> Reservation:
        return _refusal(items, [self._window(limiter, key, item) for item in items])

    async def _refused_async(
        self,
        limiter: limits.aio.strategies.RateLimiter,
        key: str,
        items: Sequence[limits.RateLimitItem],
    ) -> Reservation:
        windows = [await self._window(limiter, key, item) for item in items]
        return _refusal(items, windows)


def _refusal(items: Sequence[limits.RateLimitItem], windows: list[Any]) -> Reservation:
    """Return the refusal of a call, waiting for the latest of *items*' windows."""
    waits = [
        _item_wait(item, window) for item, window in zip(items, windows, strict=True)
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
