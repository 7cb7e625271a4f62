"""limits' window strategies, counted by fluxus in this process's memory.

The same arithmetic as limits' ``FixedWindowRateLimiter``,
``SlidingWindowCounterRateLimiter`` and ``MovingWindowRateLimiter`` on its
``MemoryStorage`` (``tests/test_rate_limit_windows.py`` replays one sequence
of calls through both), without limits' per-key expiry bookkeeping (a lock
per key and a timer thread): the windows that have ended are swept now and
then, so memory stays proportional to the keys active in the last period
(two periods for the sliding counter), and an admission is one dict lookup
per item.

- Fixed window: a window opens at its first hit and lasts the item's period;
  a call is admitted while the count plus its cost stays within the amount.
- Sliding window counter: windows aligned on multiples of the period (on
  ``time.time()``, as limits); the previous window's count weighs by the
  share of it still inside the sliding period, and a call is admitted while
  that weighted count, rounded down, plus its cost stays within the amount.
- Moving window: every admitted call's time, for one period; a call is
  admitted while those times plus its cost stay within the amount. A call
  exactly one period old is still inside the window, as for limits' ``hit``
  (its ``test`` says outside); ``peek`` and ``take`` agree here.
"""

# ruff: noqa: ARG002 - the strategies' hooks share one signature

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from fluxus._mutex import Mutex

from ._gcra import ADMITTED, Reservation
from ._windows import sliding_window_wait

if TYPE_CHECKING:
    import limits

#: A refused call waits at least this long: a window said to end "now"
#: must not make a waiter spin.
_LEAST_WAIT = 0.001


class _MemoryWindows:
    """Per item and key, a strategy's state, behind one lock.

    Subclasses give the state's shape: :meth:`_decide` counts a call or
    says how long it waits, :meth:`_ended` says when a state can go.
    """

    _SWEEP_EVERY = 4096
    #: Whether windows are counted on ``time.monotonic()`` (else ``time.time()``).
    MONOTONIC: ClassVar[bool] = True

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._lock = Mutex()
        self._clock = clock or (time.monotonic if self.MONOTONIC else time.time)
        # (amount, period) -> key -> state: one dict per item, so an entry is
        # keyed by the caller's own key string (no tuple per key: 64 bytes
        # less per key; bench_rate_limit.py --only memory).
        self._windows: dict[tuple[int, int], dict[str, Any]] = {}
        self._until_sweep = self._SWEEP_EVERY
        # The last items seen and their dicts: a limiter passes the same
        # tuple on every call, so the hot path looks nothing up for them.
        self._items: object = None
        self._dicts: list[dict[str, Any]] = []

    def _for(self, items: Sequence[limits.RateLimitItem]) -> list[dict[str, Any]]:
        if items is not self._items:
            self._dicts = [self._of(item) for item in items]
            self._items = items
        return self._dicts

    def _of(self, item: limits.RateLimitItem) -> dict[str, Any]:
        ident = (item.amount, item.get_expiry())
        windows = self._windows.get(ident)
        if windows is None:
            windows = self._windows[ident] = {}
        return windows

    def take(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,
        cost: int = 1,
    ) -> Reservation:
        """Count *cost* in every item's window if each has room, else the wait."""
        with self._lock:
            now = self._clock()
            wait = self._decide(key, items, now, cost, count=True)
        return Reservation(admitted=False, wait=wait) if wait else ADMITTED

    async def take_async(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,
        cost: int = 1,
    ) -> Reservation:
        """Same as :meth:`take`: no I/O here."""
        return self.take(key, items, max_wait, cost)

    def peek(
        self, key: str, items: Sequence[limits.RateLimitItem], cost: int = 1
    ) -> float:
        """Return 0 when a call would be admitted now, else the expected wait."""
        with self._lock:
            return self._decide(key, items, self._clock(), cost, count=False)

    async def peek_async(
        self, key: str, items: Sequence[limits.RateLimitItem], cost: int = 1
    ) -> float:
        """Same as :meth:`peek`: no I/O here."""
        return self.peek(key, items, cost)

    def _decide(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        now: float,
        cost: int,
        *,
        count: bool,
    ) -> float:
        """Return the wait (0: admitted, and counted if *count*); lock held.

        Every item must have room before any counts the call: a refused
        call spends nothing.
        """
        states = []
        wait = 0.0
        opened = False
        for item, of_item in zip(items, self._for(items), strict=True):
            state = of_item.get(key)
            if state is None or self._over(state, now):
                if not count:
                    continue  # no window yet: room for any cost allowed
                state = of_item[key] = self._fresh(item, now)
                opened = True
            left = self._wait(item, state, now, cost)
            if left > wait:  # noqa: PLR1730 - max() is a call on the hot path
                wait = left
            states.append((item, state))
        if count and not wait:
            for item, state in states:
                self._count(item, state, now, cost)
        if opened:  # after the loop: a sweep replaces the dicts
            self._opened()
        return wait

    def _over(self, state: Any, now: float) -> bool:
        """Return whether *state* has ended and a call starts a new one."""
        return False

    def _fresh(self, item: limits.RateLimitItem, now: float) -> Any:
        """Return the state of a key with no call counted yet."""
        raise NotImplementedError

    def _wait(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> float:
        """Return 0 if *state* has room for *cost*, else the wait (>= 1 ms)."""
        raise NotImplementedError

    def _count(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> None:
        """Count *cost* in *state*."""
        raise NotImplementedError

    def _opened(self) -> None:
        """Note a new state; sweep the ended ones now and then (lock held)."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep(self._clock())

    def _ended(self, item: tuple[int, int], state: Any, now: float) -> bool:
        """Return whether *state* (of an item's ``(amount, period)``) can go."""
        raise NotImplementedError

    def _sweep(self, now: float) -> None:
        for ident, windows in self._windows.items():  # rebuilt: compact again
            self._windows[ident] = {
                k: w for k, w in windows.items() if not self._ended(ident, w, now)
            }
        self._items = None  # the cached dicts are the old ones
        self._until_sweep = max(self._SWEEP_EVERY, len(self))

    def __len__(self) -> int:
        return sum(len(windows) for windows in self._windows.values())


class MemoryFixedWindows(_MemoryWindows):
    """Fixed windows: ``[window end, count]`` per item and key."""

    def _over(self, state: Any, now: float) -> bool:
        return bool(state[0] <= now)

    def _fresh(self, item: limits.RateLimitItem, now: float) -> Any:
        return [now + item.get_expiry(), 0]

    def _wait(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> float:
        if state[1] + cost > item.amount:
            return max(float(state[0]) - now, _LEAST_WAIT)
        return 0.0

    def _count(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> None:
        state[1] += cost

    def _ended(self, item: tuple[int, int], state: Any, now: float) -> bool:
        return self._over(state, now)  # a window that has ended is all it holds


class MemorySlidingWindowCounters(_MemoryWindows):
    """Sliding window counters: the last two windows' ``[index, count]`` each."""

    MONOTONIC = False  # windows on multiples of the period, as limits'

    def _fresh(self, item: limits.RateLimitItem, now: float) -> Any:
        period = item.get_expiry()
        return [int(now / period), 0, int((now - period) / period), 0]

    def _wait(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> float:
        period = item.get_expiry()
        # limits' keys: the windows of now and of a period ago
        current, previous = int(now / period), int((now - period) / period)
        before = _count_in(state, previous)
        now_count = _count_in(state, current)
        before_ttl = (1 - ((now - period) / period) % 1) * period if before else 0.0
        weighted = before * before_ttl / period + now_count
        if math.floor(weighted) + cost <= item.amount:
            return 0.0
        current_ttl = (1 - (now / period) % 1) * period + period
        left = sliding_window_wait(item, before, before_ttl, now_count, current_ttl)
        return max(left, _LEAST_WAIT)

    def _count(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> None:
        current = int(now / item.get_expiry())
        if state[0] == current:
            state[1] += cost
        else:  # the latest window becomes the one before
            state[2], state[3] = state[0], state[1]
            state[0], state[1] = current, cost

    def _ended(self, item: tuple[int, int], state: Any, now: float) -> bool:
        # Its latest window is no longer even the previous one.
        period = item[1]
        return bool(state[0] < int((now - period) / period))


def _count_in(state: list[int], window: int) -> int:
    """Return the count *state* holds for *window* (0 if it holds none)."""
    if state[0] == window:
        return state[1]
    return state[3] if state[2] == window else 0


class MemoryMovingWindows(_MemoryWindows):
    """Moving windows: the times of the calls of the last period, oldest first."""

    def _fresh(self, item: limits.RateLimitItem, now: float) -> Any:
        return deque()

    def _wait(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> float:
        period = item.get_expiry()
        oldest = now - period
        while state and state[0] < oldest:  # limits keeps a call of now - period
            state.popleft()
        over = len(state) + cost - item.amount
        if over > 0:  # the over-th oldest call must leave the window first
            return max(float(state[over - 1]) + period - now, _LEAST_WAIT)
        return 0.0

    def _count(
        self, item: limits.RateLimitItem, state: Any, now: float, cost: int
    ) -> None:
        state.extend([now] * cost)

    def _ended(self, item: tuple[int, int], state: Any, now: float) -> bool:
        return not state or bool(state[-1] < now - item[1])
