"""The callers waiting for reserved slots of one bucket, in order.

A caller told to wait holds a :class:`Ticket`: the moment its slot is due.
When a waiter gives its reservation back (cancelled, timed out), every waiter
queued after it on the same key moves forward by the time that reservation
held (:meth:`Waiters.leave`) and is woken to sleep the shorter wait: first
come, first served holds and no permit sits unused.

Asyncio waiters do not each set a timer: the waiters of one key on one loop
wait in an :class:`_Alarm`, a queue ordered by slot with the one timer that
wakes them, in order, when their slots come. A loop's timer heap then holds
one entry per key, not per waiter, and a waiter moving forward costs no
wake-up, only the alarm's timer set earlier.

Waiters given back on an event loop's thread (cancelled tasks) move the
later ones forward together, once per turn of the loop, not once each: a
thousand clients gone at once cost one pass over the queue, not a thousand.
Until then the later slots are late, never early, and any other change to
the key's queue settles them first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluxus._aio import running_trio

if TYPE_CHECKING:
    from ._gcra import Bucket


class Ticket:
    """One waiter's reserved slot: when it is due, and how to wake it early."""

    __slots__ = (
        "_alarm",
        "_event",
        "_future",
        "_trio",
        "buckets",
        "cost",
        "due",
        "key",
        "owner",
    )

    def __init__(
        self,
        owner: Waiters,
        key: str,
        due: float,
        cost: int,
        buckets: Sequence[Bucket],
    ) -> None:
        #: The queues this ticket waits in.
        self.owner = owner
        self.key = key
        #: The tokens reserved.
        self.cost = cost
        #: ``time.monotonic()`` at which the slot is due.
        self.due = due
        #: The buckets the tokens were reserved in.
        self.buckets = buckets
        self._alarm: _Alarm | None = None
        self._event: threading.Event | None = None
        self._future: asyncio.Future[bool] | None = None
        self._trio: tuple[Any, Any] | None = None  # (trio.Event, its TrioToken)

    @property
    def shift(self) -> float:
        """How far later waiters move forward when this one leaves."""
        return self.cost * min(bucket.interval for bucket in self.buckets)

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

    def wait_async(self, seconds: float) -> Awaitable[bool]:
        """Sleep until the slot is due, however it moves; ``False`` then.

        Under asyncio the key's alarm on this loop wakes the waiter when its
        slot comes, wherever the slot has moved meanwhile (*seconds* is only
        what the caller expected): what is awaited is a bare future, no
        coroutine, no timer of its own. Under trio the waiter sleeps up to
        *seconds* and the wait is ``True`` if its slot moved forward
        meanwhile. A waiter interrupted is taken off by :meth:`Waiters.leave`.
        """
        if running_trio():
            return self._wait_trio(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._future = future
        self.owner.ring(self, loop)
        return future

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
        """Wake a thread or trio waiter so it sleeps its new, shorter wait."""
        if self._event is not None:
            self._event.set()
        waiting = self._trio
        if waiting is not None:
            event, token = waiting
            with contextlib.suppress(RuntimeError):  # its run has ended
                token.run_sync_soon(event.set)


class _Alarm:
    """The asyncio waiters of one key on one loop, by slot, and their one timer.

    Its queue is guarded by the owning :class:`Waiters`' lock; its timer is
    set and rung in the loop's thread only.
    """

    __slots__ = ("at", "key", "live", "loop", "owner", "tickets", "timer")

    def __init__(
        self, owner: Waiters, key: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.owner = owner
        self.key = key
        self.loop = loop
        #: By slot; a ticket whose ``_alarm`` is no longer this one has left
        #: and is skipped (taking it out of the middle would cost a pass).
        self.tickets: deque[Ticket] = deque()
        #: How many of :attr:`tickets` are still queued here.
        self.live = 0
        #: The slot the timer is set for (``None``: no timer).
        self.at: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def add(self, ticket: Ticket) -> None:
        """Queue *ticket* by its slot (the lock held)."""
        tickets = self.tickets
        due = ticket.due
        if not tickets or tickets[-1].due <= due:
            tickets.append(ticket)  # slots are reserved in order: the usual case
        else:  # a Redis reply overtaken by a later one, a larger cost
            place = len(tickets)
            while place and tickets[place - 1].due > due:
                place -= 1
            tickets.insert(place, ticket)
        ticket._alarm = self  # noqa: SLF001 - the queue's own bookkeeping
        self.live += 1

    def remove(self, ticket: Ticket) -> None:
        """Take *ticket* off the queue (the lock held); it is skipped later."""
        ticket._alarm = None  # noqa: SLF001 - the queue's own bookkeeping
        self.live -= 1
        if not self.live:
            self.tickets.clear()
            self.owner.drop(self)

    def reorder(self) -> None:
        """Sort the queue again: slots moved forward passed unmoved ones."""
        self.tickets = deque(
            sorted((t for t in self.tickets if t._alarm is self), key=_due)  # noqa: SLF001
        )

    def arm(self, due: float | None) -> None:
        """Ring at *due* (``time.monotonic()``) if sooner than now set."""
        if due is None or (self.at is not None and self.at <= due):
            return
        if self.timer is not None:
            self.timer.cancel()
        loop = self.loop
        self.at = due
        self.timer = loop.call_at(loop.time() + (due - time.monotonic()), self.ring)

    def head(self) -> float | None:
        """Return the first slot queued (the lock held)."""
        tickets = self.tickets
        while tickets and tickets[0]._alarm is not self:  # noqa: SLF001 - left
            tickets.popleft()
        return tickets[0].due if tickets else None

    def rearm(self) -> None:
        """Set the timer for the first slot, which may have moved forward."""
        with self.owner.lock:
            due = self.head()
        self.arm(due)

    def ring(self) -> None:
        """Wake, in order, every waiter whose slot has come."""
        self.timer = self.at = None
        due: list[asyncio.Future[bool] | None] = []
        owner = self.owner
        with owner.lock:
            if owner.pending:
                owner.settle(self.key)
            tickets = self.tickets
            now = time.monotonic()
            while tickets:
                ticket = tickets[0]
                if ticket._alarm is not self:  # noqa: SLF001 - it has left
                    tickets.popleft()
                elif ticket.due <= now:
                    tickets.popleft()
                    ticket._alarm = None  # noqa: SLF001 - the queue's own bookkeeping
                    self.live -= 1
                    due.append(ticket._future)  # noqa: SLF001
                else:
                    break
            if not self.live:
                owner.drop(self)
            head = self.head()
        for future in due:
            _release(future)
        self.arm(head)


def _due(ticket: Ticket) -> float:
    return ticket.due


class Waiters:
    """Every key's waiters and their slots."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._queues: dict[str, dict[Ticket, None]] = {}
        #: The keys with waiters (read without the lock: a dict lookup).
        self.queues: Mapping[str, object] = self._queues
        self._alarms: dict[tuple[str, asyncio.AbstractEventLoop], _Alarm] = {}
        #: Per key, the ``(slot, shift)`` of the waiters given back whose
        #: later waiters have not moved forward yet (see :meth:`leave`).
        self.pending: dict[str, list[tuple[float, float]]] = {}

    def join(
        self,
        key: str,
        wait: float,
        cost: int,
        buckets: Sequence[Bucket],
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
        ticket = Ticket(self, key, due, cost, buckets)
        with self.lock:
            if self.pending:
                self.settle(key)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = {}
            queue[ticket] = None
        return ticket

    def ring(self, ticket: Ticket, loop: asyncio.AbstractEventLoop) -> None:
        """Have the key's alarm on *loop* wake *ticket* when its slot comes."""
        with self.lock:
            if self.pending:
                self.settle(ticket.key)
            alarm = self._alarms.get((ticket.key, loop))
            if alarm is None:
                alarm = self._alarms[ticket.key, loop] = _Alarm(self, ticket.key, loop)
            alarm.add(ticket)
            due = alarm.head()
        alarm.arm(due)

    def drop(self, alarm: _Alarm) -> None:
        """Forget an alarm with no waiter left (the lock held)."""
        if self._alarms.get((alarm.key, alarm.loop)) is alarm:
            del self._alarms[alarm.key, alarm.loop]

    def queued(self, key: str) -> bool:
        """Return whether callers wait on *key* in this process."""
        return key in self._queues

    def done(self, ticket: Ticket) -> bool:
        """Take an admitted waiter off its queue; ``False`` if it had left."""
        with self.lock:
            queue = self._queues.get(ticket.key)
            if queue is None or queue.pop(ticket, False) is not None:
                return False
            if not queue:  # nobody left to move forward, nor to come
                del self._queues[ticket.key]
                self.pending.pop(ticket.key, None)
            return True

    def leave(self, ticket: Ticket) -> bool:
        """Take a waiter off its queue and move every later one forward.

        On an event loop's thread the later waiters move at the end of this
        turn of the loop, together with every other waiter given back in
        it; elsewhere they move now.

        Returns:
            Whether the ticket was still queued (its slot is to be refunded).
        """
        key = ticket.key
        loop = asyncio._get_running_loop()  # noqa: SLF001 - None off a loop, no raise
        with self.lock:
            queue = self._queues.get(key)
            if queue is None or ticket not in queue:
                return False
            del queue[ticket]
            own = ticket._alarm  # noqa: SLF001 - the queue's own bookkeeping
            if own is not None:
                own.remove(ticket)
            if not queue:  # nobody left to move forward
                del self._queues[key]
                self.pending.pop(key, None)
                moves = None
            else:
                pending = self.pending.get(key)
                if pending is None:
                    pending = self.pending[key] = []
                    if loop is not None:
                        loop.call_soon(self._settle_later, key)
                pending.append((ticket.due, ticket.shift))
                moves = None if loop is not None else self._settle(key)
        if own is not None:
            # Given back from outside its wait (a cancelled waiter's future
            # is done already): it waits on nothing now, let it go on.
            _call(own.loop, _release, ticket._future)  # noqa: SLF001
        if moves is not None:
            _wake(*moves)
        return True

    def settle(self, key: str) -> None:
        """Move *key*'s later waiters forward now (the lock held)."""
        moves = self._settle(key)
        if moves is not None:
            _wake(*moves, locked=True)

    def _settle_later(self, key: str) -> None:
        with self.lock:
            moves = self._settle(key)
        if moves is not None:
            _wake(*moves)

    def _settle(self, key: str) -> tuple[list[Ticket], set[_Alarm]] | None:
        """Apply *key*'s pending departures in one pass (the lock held)."""
        pending = self.pending.pop(key, None)
        queue = self._queues.get(key)
        if not pending or not queue:
            return None
        # Later by their slot, not by when they joined: replies from
        # Redis may arrive out of the order the script served them.
        alarms, woken, crossed = _move_forward(queue, pending)
        if crossed:  # a moved slot passed an unmoved one: sort again
            for alarm in alarms:
                alarm.reorder()
        return woken, alarms

    def __len__(self) -> int:
        with self.lock:
            return sum(len(q) for q in self._queues.values())


def _move_forward(
    queue: dict[Ticket, None], departed: list[tuple[float, float]]
) -> tuple[set[_Alarm], list[Ticket], bool]:
    """Move every slot forward by the shifts of the departed slots before it.

    Args:
        queue: The waiters still queued.
        departed: The ``(slot, shift)`` of each waiter given back.

    Returns:
        The alarms of the asyncio waiters moved, the other waiters moved
        (to wake), and whether a moved slot passed one that did not move.
    """
    departed.sort()
    slots = [slot for slot, _ in departed]
    shifts = [0.0, *itertools.accumulate(shift for _, shift in departed)]
    first = slots[0]
    alarms: set[_Alarm] = set()
    woken: list[Ticket] = []
    kept, moved = -math.inf, math.inf  # the last unmoved, the first moved slot
    last = None
    after = bisect.bisect_left
    for other in queue:  # one pass, few calls per waiter: there may be many
        slot = other.due
        if slot > first:
            slot -= shifts[after(slots, slot)]
            other.due = slot
            if slot < moved:  # noqa: PLR1730 - min() is a call per waiter
                moved = slot
            alarm = other._alarm  # noqa: SLF001 - the queue's own bookkeeping
            if alarm is None:
                woken.append(other)  # a thread's or trio's: wake it
            elif alarm is not last:
                alarms.add(alarm)
                last = alarm
        elif slot > kept:
            kept = slot
    return alarms, woken, moved < kept


def _wake(woken: list[Ticket], alarms: set[_Alarm], *, locked: bool = False) -> None:
    """Wake the waiters moved forward and re-arm their alarms.

    Waking takes no lock of :class:`Waiters`: a thread or trio waiter is
    woken by its event. Re-arming an alarm does; with that lock *locked*
    (held by this thread) the alarm's loop re-arms it later, else now if
    this is its loop's thread.
    """
    for other in woken:
        other.wake()
    for alarm in alarms:
        if locked:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                alarm.loop.call_soon_threadsafe(alarm.rearm)
        else:
            _call(alarm.loop, alarm.rearm)


def _release(future: asyncio.Future[bool] | None) -> None:
    if future is not None and not future.done():
        future.set_result(False)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Call *fn* in *loop*'s thread: now if this is it, else as soon as it can."""
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here:
        fn(*args)
        return
    with contextlib.suppress(RuntimeError):  # its loop is closed
        loop.call_soon_threadsafe(fn, *args)
