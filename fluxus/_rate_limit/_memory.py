"""Token buckets kept in this process: GCRA behind a lock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

from ._gcra import ADMITTED, Bucket, Reservation, reserve


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
