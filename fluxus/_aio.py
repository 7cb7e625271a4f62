"""asyncio helpers for storage steps that must not stop halfway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: Storage steps finishing for a cancelled caller (asyncio keeps only weak
#: references to tasks).
_FINISHING: set[asyncio.Future[Any]] = set()


def in_background(step: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run *step* to its end in a task of its own, kept alive until it is done."""
    task = asyncio.ensure_future(step)
    _FINISHING.add(task)
    task.add_done_callback(_FINISHING.discard)
    return task


async def shielded(step: Awaitable[T]) -> T:
    """Await a storage step that must not stop halfway, whatever the caller does.

    A script cancelled between the server running it and the client reading
    its reply has changed the shared state without telling anyone (a trial
    slot or a permit taken), and redis-py can even finish a command and drop
    a cancellation that arrived meanwhile. So the step runs to its end in a
    task of its own, and the caller's cancellation is raised at once.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        in_background(task)
        raise
