"""The bulkhead's decisions: pure, no locks, no clock, no I/O.

A compartment has ``max_concurrent`` slots and ``max_waiting`` waiting
places. A caller runs at once when a slot is free and nobody waits before
it (waiters are served first come, first served: nobody barges past them);
otherwise it takes a waiting place, or is refused when none is left. A slot
that is given back while someone waits is handed straight to the first
waiter, so it is never free for a moment a newcomer could grab.

The memory store (:mod:`fluxus._bulkhead._memory`) holds a lock around each
step and wakes the waiter a step names; the Redis store runs the same rules
as Lua scripts over a sorted set of leases and one of waiters.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Verdict(enum.Enum):
    """What :meth:`Slots.enter` decided for a caller."""

    RUN = "run"
    WAIT = "wait"
    FULL = "full"


RUN, WAIT, FULL = Verdict.RUN, Verdict.WAIT, Verdict.FULL


class Slots(Generic[T]):
    """The slots of one compartment and the FIFO of its waiters.

    Waiters are represented by tickets of any type ``T`` that the store uses
    to wake them; a ticket that :meth:`leave` returns holds a slot from then
    on, whether or not its owner has noticed yet.
    """

    __slots__ = ("in_use", "max_concurrent", "max_waiting", "queue")

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.in_use = 0
        self.queue: deque[T] = deque()

    def enter(self, ticket: T | None) -> Verdict:
        """Admit a caller, queue its *ticket*, or refuse it.

        Args:
            ticket: How to wake the caller, or ``None`` when it cannot wait
                (no time left to wait): it then runs or is refused.
        """
        if self.in_use < self.max_concurrent and not self.queue:
            self.in_use += 1
            return RUN
        if ticket is None or len(self.queue) >= self.max_waiting:
            return FULL
        self.queue.append(ticket)
        return WAIT

    def leave(self) -> T | None:
        """Give a slot back; return the waiter it is handed to, if any."""
        if self.queue:
            return self.queue.popleft()
        self.in_use -= 1
        return None

    def withdraw(self, ticket: T) -> bool:
        """Take a waiter that gives up out of the queue.

        Returns:
            ``True`` if it was still waiting; ``False`` if :meth:`leave`
            had already handed it a slot, which it now holds.
        """
        try:
            self.queue.remove(ticket)
        except ValueError:
            return False
        return True
