"""Waiting for a reserved slot: the steps of one admission and their waits.

:meth:`RateLimiter._waiting` decides, as a generator of steps (take, wait,
refund, hold); the sync and the async driver run the steps with the
functions here. A slot is given back wherever it stands in the queue when
its wait is interrupted, or at once when it falls due after the enclosing
deadline.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Generator
from typing import Any, Final

from fluxus._aio import shielded
from fluxus._config import CONFIG
from fluxus._deadline import DEADLINE, effective_wait, wait_async

from ._gcra import Reservation, StorageUnavailableError
from ._queue import Ticket


def _ticket_wait(ticket: Ticket, seconds: float) -> bool:
    """Block until *ticket* is due; ``True`` if woken early (it moved forward)."""
    return ticket.wait(min(seconds, threading.TIMEOUT_MAX))


def _ticket_wait_async(ticket: Ticket, seconds: float) -> Awaitable[bool]:
    """Sleep until *ticket* is due; ``True`` if woken early (it moved forward)."""
    return ticket.wait_async(seconds)  # its coroutine: one frame less per waiter


def past_deadline(ticket: Ticket) -> bool:
    """Return whether *ticket*'s slot falls due after the enclosing deadline."""
    deadline = DEADLINE.get()
    return deadline is not None and not CONFIG.testing.active and ticket.due > deadline


def refund(answer: Reservation) -> None:
    """Give a reserved slot back before waiting for it."""
    store: Any = answer.origin
    with contextlib.suppress(StorageUnavailableError):
        store.refund(answer.token)


async def refund_async(answer: Reservation) -> None:
    """Give a reserved slot back before waiting for it, without blocking."""
    store: Any = answer.origin
    with contextlib.suppress(StorageUnavailableError):
        await shielded(store.refund_async(answer.token))


def hold(answer: Reservation) -> None:
    """Wait for a reserved slot; give it back if the wait is interrupted.

    A waiter woken early (a waiter ahead of it gave its slot back) sleeps
    again for what is left of its shortened wait.
    """
    ticket: Ticket = answer.token  # type: ignore[assignment]
    store: Any = answer.origin
    try:
        left = answer.wait
        while effective_wait(left) > 0 and _ticket_wait(ticket, left):
            left = ticket.left()
    except BaseException:
        with contextlib.suppress(StorageUnavailableError):
            store.refund(ticket)
        raise
    store.admitted(ticket)


async def hold_async(answer: Reservation) -> None:
    """Sleep until a reserved slot is due; give it back if cancelled."""
    ticket: Ticket = answer.token  # type: ignore[assignment]
    store: Any = answer.origin
    try:
        left = answer.wait
        # Due now, it still waits behind the waiters whose slots came
        # earlier: the key's alarm wakes them in order, this one last.
        if left <= 0 or effective_wait(left) > 0:
            while await _ticket_wait_async(ticket, left):
                left = ticket.left()  # trio: woken early, its slot moved forward
        if CONFIG.testing.active:
            await wait_async(0)  # still a point where the caller can be cancelled
    except BaseException:
        with contextlib.suppress(StorageUnavailableError):
            await shielded(store.refund_async(ticket))
        raise
    store.admitted(ticket)


TAKE: Final = "take"
WAIT: Final = "wait"
HOLD: Final = "hold"
REFUND: Final = "refund"
#: One step of :meth:`RateLimiter._waiting`: what to do, and with what.
Step = tuple[str, Any]


def send(
    steps: Generator[Step, Reservation | None, None], reply: Reservation | None
) -> Step | None:
    """Answer the current step; return the next one, ``None`` at the end."""
    try:
        return steps.send(reply)
    except StopIteration:
        return None
