"""The callers waiting for reserved slots of one bucket, in order.

A caller told to wait holds a :class:`Ticket`: the moment its slot is due.
When a waiter gives its reservation back (cancelled, timed out), every waiter
queued after it on the same key moves forward by the time that reservation
held (:meth:`Waiters.leave`) and is woken to sleep the shorter wait: first
come, first served holds and no permit sits unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fluxus._aio import running_trio


class Ticket:
    """One waiter's reserved slot: when it is due, and how to wake it early."""

    __slots__ = ("_event", "_future", "_loop", "_trio", "back", "cost", "due", "key")

    def __init__(self, key: str, due: float, cost: int, back: Sequence[float]) -> None:
        self.key = key
        #: The tokens reserved.
        self.cost = cost
        #: ``time.monotonic()`` at which the slot is due.
        self.due = due
        #: Per bucket, the seconds of TAT this reservation holds.
        self.back = back
        self._event: threading.Event | None = None
        self._future: asyncio.Future[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._trio: tuple[Any, Any] | None = None  # (trio.Event, its TrioToken)

    @property
    def shift(self) -> float:
        """How far later waiters move forward when this one leaves."""
        return min(self.back)

    def left(self) -> float:
        """Return the seconds until the slot is due (0 once it is)."""
        return max(0.0, self.due - time.monotonic())

    def wait(self, seconds: float) -> bool:
        """Block up to *seconds*; return whether the slot moved forward meanwhile."""
        if self._event is None:
            self._event = threading.Event()
        moved = self._event.wait(seconds)
        self._event.clear()
        return moved

    async def wait_async(self, seconds: float) -> bool:
        """Sleep up to *seconds*; return whether the slot moved forward meanwhile."""
        if running_trio():
            return await self._wait_trio(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._loop, self._future = loop, future
        # At the slot's own moment rather than *seconds* from now: on a busy
        # loop, "now" drifts between waiters and would reorder them.
        due = min(self.due, time.monotonic() + seconds)
        at = loop.time() + (due - time.monotonic())
        timer = loop.call_at(at, _settle, future, False)  # noqa: FBT003
        try:
            return await future
        finally:
            timer.cancel()
            self._future = None

    async def _wait_trio(self, seconds: float) -> bool:
        import trio  # noqa: PLC0415 - only under trio, which is then imported

        event = trio.Event()
        self._trio = (event, trio.lowlevel.current_trio_token())
        try:
            with trio.move_on_after(max(0.0, min(self.left(), seconds))):
                await event.wait()
                return True
            return False
        finally:
            self._trio = None

    def wake(self) -> None:
        """Wake the waiter so it sleeps its new, shorter wait."""
        if self._event is not None:
            self._event.set()
        waiting = self._trio
        if waiting is not None:
            event, token = waiting
            with contextlib.suppress(RuntimeError):  # its run has ended
                token.run_sync_soon(event.set)
        future, loop = self._future, self._loop
        if future is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                loop.call_soon_threadsafe(_settle, future, True)  # noqa: FBT003


def _settle(future: asyncio.Future[bool], moved: bool) -> None:  # noqa: FBT001
    if not future.done():
        future.set_result(moved)


class Waiters:
    """Every key's waiters and their slots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, dict[Ticket, None]] = {}
        #: The keys with waiters (read without the lock: a dict lookup).
        self.queues: Mapping[str, object] = self._queues

    def join(
        self,
        key: str,
        wait: float,
        cost: int,
        back: Sequence[float],
        due: float | None = None,
        *,
        first: bool = False,
    ) -> Ticket:
        """Queue a waiter of *cost* tokens whose slot is due in *wait* seconds.

        *due*, when known, is that moment on ``time.monotonic()``'s clock.
        *first*: the slot is due now; it still follows the waiters queued
        before it (see :meth:`Ticket.wait_async`).
        """
        if due is None or first:
            due = time.monotonic() + wait
        ticket = Ticket(key, due, cost, back)
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = {}
            queue[ticket] = None
        return ticket

    def queued(self, key: str) -> bool:
        """Return whether callers wait on *key* in this process."""
        return key in self._queues

    def done(self, ticket: Ticket) -> bool:
        """Take an admitted waiter off its queue; ``False`` if it had left."""
        with self._lock:
            queue = self._queues.get(ticket.key)
            if queue is None or queue.pop(ticket, False) is not None:
                return False
            if not queue:
                del self._queues[ticket.key]
            return True

    def leave(self, ticket: Ticket) -> bool:
        """Take a waiter off its queue and move every later one forward.

        Returns:
            Whether the ticket was still queued (its slot is to be refunded).
        """
        shift = ticket.shift
        with self._lock:
            queue = self._queues.get(ticket.key)
            if queue is None or ticket not in queue:
                return False
            del queue[ticket]
            # Later by their slot, not by when they joined: replies from
            # Redis may arrive out of the order the script served them.
            due = ticket.due
            later = [other for other in queue if other.due > due]
            for other in later:
                other.due -= shift
            if not queue:
                del self._queues[ticket.key]
        for other in later:
            other.wake()
        return True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())
