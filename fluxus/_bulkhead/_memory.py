"""The in-memory compartment: one lock around :class:`~._core.Slots`.

Sync and async callers of one bulkhead share it, so they share one count.
A sync waiter sleeps on a lock of its own that the slot's giver releases;
an async waiter awaits a future of its own event loop, resolved through
``call_soon_threadsafe`` (the giver may be a thread or another loop), or
under trio a ``trio.Event`` set through its run's ``TrioToken``. The
user's call never runs under the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from typing import Final

from fluxus._aio import running_trio
from fluxus._mutex import Mutex

from ._core import RUN, WAIT, Slots


class _ThreadTicket:
    """A sync waiter: a lock held until the waiter is handed a slot."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True

    def wait(self, seconds: float) -> bool:
        if math.isinf(seconds):
            return self.lock.acquire()
        return self.lock.acquire(timeout=min(seconds, threading.TIMEOUT_MAX))


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TaskTicket:
    """An async waiter: a future resolved in its own event loop."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def wake(self) -> bool:
        try:
            self.loop.call_soon_threadsafe(_grant, self.future)
        except RuntimeError:  # its loop is closed: nobody is waiting any more
            return False
        return True

    async def wait(self, seconds: float) -> bool:
        """Wait up to *seconds* to be handed a slot; return whether it came."""
        try:
            async with asyncio.timeout(None if math.isinf(seconds) else seconds):
                await self.future
        except TimeoutError:
            return False
        return True


class _TrioTicket:
    """A waiter under trio: an event set in its own run."""

    __slots__ = ("event", "token")

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 - only under trio, which is then imported

        self.event = trio.Event()
        self.token = trio.lowlevel.current_trio_token()

    def wake(self) -> bool:
        # A trio run ends only once its every task has: a waiter whose run
        # has ended was cancelled and passed on the slot it was handed.
        with contextlib.suppress(RuntimeError):
            self.token.run_sync_soon(self.event.set)
        return True

    async def wait(self, seconds: float) -> bool:
        """Wait up to *seconds* to be handed a slot; return whether it came."""
        import trio  # noqa: PLC0415 - only under trio

        with trio.move_on_after(seconds):
            await self.event.wait()
            return True
        return False


_Ticket = _ThreadTicket | _TaskTicket | _TrioTicket

#: The token of a memory slot: the slot is the count, nothing to name.
SLOT: Final = True


class MemoryCompartment:
    """The slots of one bulkhead in this process."""

    remote = False

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        self._lock = Mutex()
        self._slots: Slots[_Ticket] = Slots(max_concurrent, max_waiting)

    @property
    def in_use(self) -> int:
        """Slots taken, by running calls and by waiters just handed one."""
        return self._slots.in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._slots.queue)

    def take(self, budget: float) -> object | None:
        """Take a slot, waiting up to *budget* seconds.

        Returns:
            The slot's token, or ``None`` when none came in time.
        """
        with self._lock:
            if self._slots.enter(None) is RUN:
                return SLOT
        if budget <= 0:
            return None
        ticket = _ThreadTicket()
        with self._lock:
            verdict = self._slots.enter(ticket)
        if verdict is not WAIT:
            return SLOT if verdict is RUN else None
        try:
            granted = ticket.wait(budget)
        except BaseException:  # interrupted: give back a slot handed over
            if not self._withdraw(ticket):
                self.give_back()
            raise
        return SLOT if granted or not self._withdraw(ticket) else None

    async def take_async(self, budget: float) -> object | None:
        """Take a slot without blocking the loop; see :meth:`take`."""
        with self._lock:
            if self._slots.enter(None) is RUN:
                return SLOT
        if budget <= 0:
            return None
        ticket = _TrioTicket() if running_trio() else _TaskTicket()
        with self._lock:
            verdict = self._slots.enter(ticket)
        if verdict is not WAIT:
            return SLOT if verdict is RUN else None
        try:
            granted = await ticket.wait(budget)
        except BaseException:  # cancelled: give back a slot handed over
            if not self._withdraw(ticket):
                self.give_back()
            raise
        return SLOT if granted or not self._withdraw(ticket) else None

    def _withdraw(self, ticket: _Ticket) -> bool:
        with self._lock:
            return self._slots.withdraw(ticket)

    def give_back(self, _token: object = SLOT) -> None:
        """Give a slot back, handing it to the first waiter if there is one."""
        with self._lock:
            ticket = self._slots.leave()
        while ticket is not None and not ticket.wake():
            with self._lock:  # that waiter's loop is gone: the next one
                ticket = self._slots.leave()

    async def give_back_async(self, token: object = SLOT) -> None:
        """Give a slot back; the same step as :meth:`give_back`."""
        self.give_back(token)
