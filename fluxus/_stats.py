"""Per-policy statistics: counters cheap enough for every call.

Each counter is an :func:`itertools.count`: ``next()`` on it is one C call
that the GIL makes atomic, so sixteen threads count exactly without a lock,
and a call pays about one attribute load and one C call.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

_FIELDS = (
    "calls",
    "failures",
    "retries",
    "rejections",
    "timeouts",
    "dead_letters",
    "fallbacks",
    "hedges",
    "hedges_won",
)


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one policy's counters, read with ``policy.stats``.

    Every policy counts ``calls``; the other fields stay 0 where they do not
    apply to the policy.

    Attributes:
        calls: Calls that entered the policy, rejected ones included.
        failures: Calls that ended with an exception: for ``retry`` after it
            gave up or met an exception it does not retry, for
            ``circuit_breaker`` the failures it counts against the circuit,
            for ``dead_letter`` every ``Exception`` it saw.
        retries: Retries ``retry`` scheduled.
        rejections: Calls refused by an open circuit, a rate limit or a
            full bulkhead.
        timeouts: Calls ``timeout`` gave up on.
        dead_letters: Letters ``dead_letter`` handed to its handler.
        fallbacks: Failed calls ``fallback`` answered with its value or
            handler.
        hedges: Extra calls ``hedge`` started.
        hedges_won: Calls won by one of those extra calls.
    """

    calls: int = 0
    failures: int = 0
    retries: int = 0
    rejections: int = 0
    timeouts: int = 0
    dead_letters: int = 0
    fallbacks: int = 0
    hedges: int = 0
    hedges_won: int = 0


class Counters:
    """The live counters behind :class:`Stats`; bump one with ``next()``.

    A count has no getter, so a snapshot reads each counter with ``next()``
    too, which returns the bumps so far plus the snapshots taken before:
    those are subtracted. Snapshots take a lock among themselves; the bumps
    never do.
    """

    __slots__ = (*_FIELDS, "_lock", "_snapshots")

    def __init__(self) -> None:
        self.calls = itertools.count()
        self.failures = itertools.count()
        self.retries = itertools.count()
        self.rejections = itertools.count()
        self.timeouts = itertools.count()
        self.dead_letters = itertools.count()
        self.fallbacks = itertools.count()
        self.hedges = itertools.count()
        self.hedges_won = itertools.count()
        self._snapshots = 0
        self._lock = threading.Lock()

    def snapshot(self) -> Stats:
        """Return the counters' current values."""
        with self._lock:
            taken = self._snapshots
            self._snapshots = taken + 1
            return Stats(*(next(getattr(self, name)) - taken for name in _FIELDS))
