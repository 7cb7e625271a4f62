"""Token buckets kept in this process: GCRA behind a lock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from fluxus._mutex import Mutex

from ._gcra import ADMITTED, Bucket, Reservation, convert, reserve, sooner
from ._queue import Ticket, Waiters


class MemoryTokenBuckets:
    """GCRA buckets in this process's memory: one float per bucket and key.

    A bucket whose TAT has passed is indistinguishable from a fresh one, so
    such keys are swept away now and then: memory stays proportional to the
    keys active in the last few refill periods, never to the calls made.
    A new limit for a key keeps the tokens its bucket holds (:func:`convert`).
    """

    _SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._monotonic = clock is time.monotonic
        self._lock = Mutex()
        # key -> (the buckets the TATs belong to, one TAT per bucket)
        self._state: dict[str, tuple[Sequence[Bucket], list[float]]] = {}
        self._until_sweep = self._SWEEP_EVERY
        self.waiters = Waiters()
        self._queued = self.waiters.queues  # the hot path's own reference

    def _tats(self, key: str, buckets: Sequence[Bucket], now: float) -> list[float]:
        state = self._state.get(key)
        if state is None:
            self._until_sweep -= 1
            if self._until_sweep <= 0:
                self._sweep(now)
            return [-math.inf] * len(buckets)
        old, tats = state
        if old is buckets or old == buckets:
            return tats
        if len(old) != len(buckets):  # another shape of limit: start full
            return [-math.inf] * len(buckets)
        return [
            convert(tat, was, new, now)
            for tat, was, new in zip(tats, old, buckets, strict=True)
        ]

    def take(
        self, key: str, buckets: Sequence[Bucket], max_wait: float, cost: int = 1
    ) -> Reservation:
        """Reserve *cost* tokens for *key* within *max_wait* s, or report the wait."""
        with self._lock:
            now = self._clock()
            state = self._state.get(key)
            tats = (
                state[1]
                if state is not None and (state[0] is buckets)
                else self._tats(key, buckets, now)
            )
            wait, new = reserve(tats, buckets, now, max_wait, cost)
            if new is None:
                return Reservation(admitted=False, wait=wait)
            self._state[key] = (buckets, new)
            if wait <= 0 and key not in self._queued:
                return ADMITTED
            # Waiters still queued: the earlier ones' slots have come but a
            # busy loop has not woken them yet. Queue behind them.
            ticket = self.waiters.join(
                key,
                wait,
                cost,
                buckets,
                now + wait if self._monotonic else None,
                first=wait <= 0,
            )
        return Reservation(admitted=True, wait=wait, token=ticket, origin=self)

    def peek(self, key: str, buckets: Sequence[Bucket], cost: int = 1) -> float:
        """Return the seconds until *key* would be admitted, consuming nothing."""
        with self._lock:
            now = self._clock()
            if key not in self._state:
                tats = [-math.inf] * len(buckets)
            else:
                tats = self._tats(key, buckets, now)
            return reserve(tats, buckets, now, -1.0, cost)[0]

    def admitted(self, token: object) -> None:
        """Take a waiter whose slot came off the queue."""
        assert isinstance(token, Ticket)  # noqa: S101 - take() made it
        self.waiters.done(token)

    def refund(self, token: object) -> None:
        """Give a reserved slot back, wherever it stands in the queue.

        Every later waiter's slot moves forward by the time it held.
        """
        assert isinstance(token, Ticket)  # noqa: S101 - take() made it
        with self._lock:
            if not self.waiters.leave(token):
                return
            state = self._state.get(token.key)
            if state is not None:  # cost tokens back, at today's intervals
                buckets, tats = state
                self._state[token.key] = (
                    buckets,
                    [
                        sooner(tat, token.cost * b.interval)
                        for tat, b in zip(tats, buckets, strict=True)
                    ],
                )

    async def refund_async(self, token: object) -> None:
        """Same as :meth:`refund`: no I/O here."""
        self.refund(token)

    def _sweep(self, now: float) -> None:
        self._state = {k: v for k, v in self._state.items() if max(v[1]) > now}
        self._until_sweep = max(self._SWEEP_EVERY, len(self._state))

    def __len__(self) -> int:
        return len(self._state)
