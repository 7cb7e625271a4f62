"""Retry budgets: a cap on retries shared by many functions (Finagle's model).

Over a sliding window of ten one-second buckets, retries may number at most
``ratio`` times the first attempts made plus ``min_per_second * 10``. When
a downstream service is down for everybody, a budget keeps retries from
multiplying the load on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fluxus._mutex import Mutex

WINDOW_SECONDS = 10


class RetryBudget:
    """A budget of retries shared by every :func:`fluxus.retry` given it.

    Args:
        ratio: Retries allowed per first attempt within the window.
        min_per_second: Retries allowed per second whatever the traffic, so
            that a quiet service can still retry.
        clock: A monotonic clock in seconds; tests pass a fake one.

    Raises:
        TypeError: If a parameter is not a number.
        ValueError: If a parameter is negative or not finite.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio: float = _non_negative(ratio, "ratio")
        self.min_per_second: float = _non_negative(min_per_second, "min_per_second")
        if not callable(clock):
            msg = f"clock must be a callable returning seconds, got {clock!r}"
            raise TypeError(msg)
        self._clock = clock
        self._lock = Mutex()
        # One bucket per second: [second, first attempts, retries].
        self._buckets = [[-1, 0, 0] for _ in range(WINDOW_SECONDS)]

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r})"
        )

    def _bucket(self, second: int) -> list[int]:
        bucket = self._buckets[second % WINDOW_SECONDS]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        return bucket

    def _totals(self, second: int) -> tuple[int, int]:
        oldest = second - WINDOW_SECONDS
        first = retries = 0
        for stamp, attempts, retried in self._buckets:
            if stamp > oldest:
                first += attempts
                retries += retried
        return first, retries

    def record_attempt(self) -> None:
        """Count one first attempt (every protected call makes one)."""
        second = math.floor(self._clock())
        with self._lock:
            self._bucket(second)[1] += 1

    def available(self) -> int:
        """Return how many retries the budget would allow right now."""
        second = math.floor(self._clock())
        with self._lock:
            return self._available(second)

    def _available(self, second: int) -> int:
        first, retries = self._totals(second)
        allowed = self.ratio * first + self.min_per_second * WINDOW_SECONDS
        return max(0, math.floor(allowed) - retries)

    def try_spend(self) -> bool:
        """Take one retry from the budget; return ``False`` when it is spent."""
        second = math.floor(self._clock())
        with self._lock:
            if self._available(second) < 1:
                return False
            self._bucket(second)[2] += 1
            return True


def _non_negative(value: object, param: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        msg = f"{param} must be a number, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value) or value < 0:
        msg = f"{param} must be a finite number >= 0, got {value!r}"
        raise ValueError(msg)
    return float(value)
