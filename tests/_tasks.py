"""Background calls for test bodies that run under asyncio and trio alike.

``async with tasks(mode) as start:`` opens what the running library needs
(nothing for asyncio, a nursery for trio); ``start(fn, *args)`` runs
``fn(*args)`` in the background and returns a :class:`Task`, which can be
cancelled and whose end can be awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

CANCELLED = "cancelled"


class Task:
    """One background call of either library."""

    def __init__(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        self._fn, self._args = fn, args
        self._task: asyncio.Future[Any] | None = None
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._outcome: Any = None

    async def run_trio(self) -> None:
        with self._scope:
            try:
                self._outcome = ("returned", await self._fn(*self._args))
            except Exception as exc:
                self._outcome = exc
        if self._scope.cancelled_caught:
            self._outcome = CANCELLED
        self._done.set()

    def start_asyncio(self) -> None:
        self._task = asyncio.ensure_future(self._fn(*self._args))

    def done(self) -> bool:
        if self._task is not None:
            return self._task.done()
        return self._done.is_set()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        else:
            self._scope.cancel()

    async def outcome(self) -> Any:
        """Wait for the end: ``("returned", value)``, ``CANCELLED`` or the error."""
        if self._task is None:
            await self._done.wait()
            return self._outcome
        try:
            return ("returned", await self._task)
        except asyncio.CancelledError:
            return CANCELLED
        except Exception as exc:
            return exc


@contextlib.asynccontextmanager
async def tasks(mode: Any) -> AsyncIterator[Callable[..., Task]]:
    """Yield ``start(fn, *args)`` for the running library (see the module)."""
    if not mode.is_trio:

        def start_asyncio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Task:
            task = Task(fn, args)
            task.start_asyncio()
            return task

        yield start_asyncio
        return
    async with trio.open_nursery() as nursery:

        def start_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Task:
            task = Task(fn, args)
            nursery.start_soon(task.run_trio)
            return task

        yield start_trio
