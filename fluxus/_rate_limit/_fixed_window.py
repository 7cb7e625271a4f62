"""limits' fixed window, counted by fluxus in this process's memory.

The same arithmetic as limits' ``FixedWindowRateLimiter`` on its
``MemoryStorage`` (a window opens at its first hit and lasts the item's
period; a call is admitted while the count plus its cost stays within the
amount), without limits' per-key expiry bookkeeping: windows that have ended
are swept now and then, so memory stays proportional to the keys active in
the last period, and an admission is one dict lookup per item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._gcra import ADMITTED, Reservation

if TYPE_CHECKING:
    import limits


class MemoryFixedWindows:
    """Fixed windows per item and key: ``[window end, count]``, behind a lock."""

    _SWEEP_EVERY = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (amount, period) -> key -> [window end, count]: one dict per item,
        # so an entry is keyed by the caller's own key string (no tuple per
        # key: 64 bytes less per key; bench_rate_limit.py --only memory).
        self._windows: dict[tuple[int, int], dict[str, list[float]]] = {}
        self._until_sweep = self._SWEEP_EVERY
        # The last items seen and their dicts: a limiter passes the same
        # tuple on every call, so the hot path looks nothing up for them.
        self._items: object = None
        self._dicts: list[dict[str, list[float]]] = []

    def _for(
        self, items: Sequence[limits.RateLimitItem]
    ) -> list[dict[str, list[float]]]:
        if items is not self._items:
            self._dicts = [self._of(item) for item in items]
            self._items = items
        return self._dicts

    def _of(self, item: limits.RateLimitItem) -> dict[str, list[float]]:
        ident = (item.amount, item.get_expiry())
        windows = self._windows.get(ident)
        if windows is None:
            windows = self._windows[ident] = {}
        return windows

    def _counts(
        self, key: str, items: Sequence[limits.RateLimitItem], now: float
    ) -> list[list[float]]:
        windows = []
        for item, of_item in zip(items, self._for(items), strict=True):
            window = of_item.get(key)
            if window is None or window[0] <= now:
                window = of_item[key] = [now + item.get_expiry(), 0]
                self._until_sweep -= 1
            windows.append(window)
        if self._until_sweep <= 0:  # after the loop: it replaces the dicts
            self._sweep(now)
        return windows

    def take(
        self,
        key: str,
        items: Sequence[limits.RateLimitItem],
        max_wait: float,  # noqa: ARG002 - the stores' shared signature
        cost: int = 1,
    ) -> Reservation:
        """Count *cost* in every item's window if each has room, else the wait."""
        with self._lock:
            now = time.monotonic()
            windows = self._counts(key, items, now)
            wait = 0.0
            for item, window in zip(items, windows, strict=True):
                if window[1] + cost > item.amount:
                    wait = max(wait, window[0] - now, 0.001)
            if wait:
                return Reservation(admitted=False, wait=wait)
            for window in windows:
                window[1] += cost
        return ADMITTED

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
            now = time.monotonic()
            wait = 0.0
            for item in items:
                window = self._of(item).get(key)
                if (
                    window is not None
                    and window[0] > now
                    and window[1] + cost > item.amount
                ):
                    wait = max(wait, window[0] - now, 0.001)
            return wait

    async def peek_async(
        self, key: str, items: Sequence[limits.RateLimitItem], cost: int = 1
    ) -> float:
        """Same as :meth:`peek`: no I/O here."""
        return self.peek(key, items, cost)

    def _sweep(self, now: float) -> None:
        for ident, windows in self._windows.items():  # rebuilt: compact again
            self._windows[ident] = {k: w for k, w in windows.items() if w[0] > now}
        self._items = None  # the cached dicts are the old ones
        self._until_sweep = max(self._SWEEP_EVERY, len(self))

    def __len__(self) -> int:
        return sum(len(windows) for windows in self._windows.values())
