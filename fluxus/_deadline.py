"""Deadlines published through a context variable, and waits that obey them.

Every :func:`fluxus.timeout` publishes its deadline (a :func:`time.monotonic`
instant) in :data:`DEADLINE`; nested deadlines only shrink. Backoff sleeps
and rate-limit waits go through :func:`wait_sync` and :func:`wait_async`,
which are instant in testing mode and never last past the deadline, so a
wait inside a call that a thread timeout has abandoned ends when its caller
walked away.

A call abandoned by a thread timeout keeps running in its worker thread,
and keeps what it holds: :data:`HELD` lists the bulkhead slots the current
call holds, and the thread timeout asks each of them to stay taken until the
abandoned work really returns (:func:`keep_held`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

from ._aio import sleep
from ._config import CONFIG

DEADLINE: ContextVar[float | None] = ContextVar("fluxus_deadline", default=None)

monotonic = time.monotonic


class Held(Protocol):
    """Something the current call holds (a bulkhead slot)."""

    def keep(self) -> Callable[[], None]:
        """Stay held past the caller; return what gives it back later."""


#: What the current call holds, innermost last.
HELD: ContextVar[tuple[Held, ...]] = ContextVar("fluxus_held", default=())


def keep_held() -> tuple[Callable[[], None], ...]:
    """Keep what the current call holds for work about to be abandoned.

    Returns:
        The callables that give each thing back; call them once the
        abandoned work has returned.
    """
    return tuple(held.keep() for held in HELD.get())


def remaining() -> float | None:
    """Return the seconds left before the enclosing fluxus deadline.

    Returns:
        The seconds left (``0.0`` once it has passed), or ``None`` when no
        :func:`fluxus.timeout` encloses the caller.
    """
    deadline = DEADLINE.get()
    if deadline is None:
        return None
    return max(0.0, deadline - monotonic())


def _capped(seconds: float) -> float:
    seconds = effective_wait(seconds)
    deadline = DEADLINE.get()
    if deadline is not None:
        seconds = min(seconds, deadline - monotonic())
    return seconds


def effective_wait(seconds: float) -> float:
    """Return how long a wait of *seconds* really lasts (0 in testing mode)."""
    return 0.0 if CONFIG.testing.active else seconds


def wait_sync(seconds: float) -> None:
    """Block for *seconds*, not past the enclosing deadline; instant in testing."""
    seconds = _capped(seconds)
    if seconds > 0:
        time.sleep(min(seconds, threading.TIMEOUT_MAX))


async def wait_async(seconds: float) -> None:
    """Sleep for *seconds*, not past the enclosing deadline; cancellable.

    It sleeps with the running library (asyncio or trio). In testing mode
    it still yields to the loop once, so cancellation and other tasks
    behave as they do with real waits.
    """
    await sleep(max(0.0, _capped(seconds)))
