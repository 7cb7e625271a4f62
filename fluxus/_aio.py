"""The async primitives of fluxus, for asyncio and trio alike.

Every async policy reaches the event loop through this module only: it
finds the library running the caller (:func:`running_trio`,
:func:`current_library`) and uses
that library's sleeps, cancellation and worker threads. trio is optional
(``pip install 'fluxus[trio]'``); while it is not even imported, the
library is asyncio without asking anything else, so the asyncio path pays
one dictionary lookup (and, once trio is imported, one attribute read).

The storage helpers :func:`in_background` and :func:`shielded` are asyncio
only: they serve the Redis storages, whose asyncio client does not run
under trio (:func:`asyncio_only` refuses that case with a clear error).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Storage steps finishing for a cancelled caller (asyncio keeps only weak
#: references to tasks).
_FINISHING: set[asyncio.Future[Any]] = set()

_modules = sys.modules

#: sniffio's per-thread marker, which trio sets while it runs (also as a
#: guest on another loop); read once trio has been imported.
_marker: Any = None


def running_trio() -> bool:
    """Return whether trio runs the caller; cheap on the asyncio path.

    While trio has not been imported this is one dictionary lookup; once
    it has, one attribute read of sniffio's thread-local marker.
    """
    global _marker  # noqa: PLW0603 - a cache filled once
    if "trio" not in _modules:
        return False
    marker = _marker
    if marker is None:
        import sniffio  # noqa: PLC0415 - installed with trio

        marker = _marker = sniffio.thread_local
    return bool(marker.name == "trio")


def current_library() -> str:
    """Return the name of the async library running the caller.

    Returns:
        ``"asyncio"`` or ``"trio"`` (another library sniffio knows is
        returned by its name).
    """
    if "trio" not in _modules:
        return "asyncio"
    import sniffio  # noqa: PLC0415 - installed with trio

    return sniffio.current_async_library()


async def sleep(seconds: float) -> None:
    """Sleep *seconds* with the running library's sleep (cancellable)."""
    if running_trio():
        import trio  # noqa: PLC0415 - optional

        await trio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


async def run_sync_in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run the blocking ``func(*args)`` in a worker thread and await its result.

    With asyncio this is :func:`asyncio.to_thread`; with trio
    :func:`trio.to_thread.run_sync`. Either way the call runs with a copy
    of the caller's context and runs to its end when the caller is
    cancelled (asyncio's caller stops waiting at once; trio's cancellation
    arrives once the call has ended).
    """
    if running_trio():
        import trio  # noqa: PLC0415 - optional

        return await trio.to_thread.run_sync(func, *args)
    return await asyncio.to_thread(func, *args)


async def run_trio_within(
    seconds: float, func: Callable[..., Awaitable[T]], args: Any, kwargs: Any
) -> tuple[BaseException | None, T | None]:
    """Await ``func(*args, **kwargs)`` under trio, cancelled after *seconds*.

    Returns:
        ``(None, result)`` when the call ended in time, ``(cancelled,
        None)`` when the deadline cancelled it, with trio's ``Cancelled``
        that ended it (a :func:`trio.move_on_after` scope: a cancellation
        from further out is not taken for the deadline and propagates).
    """
    import trio  # noqa: PLC0415 - only ever called under trio

    cancelled: BaseException | None = None
    with trio.move_on_after(seconds) as scope:
        try:
            return None, await func(*args, **kwargs)
        except trio.Cancelled as exc:
            cancelled = exc
            raise
    try:
        return (cancelled if scope.cancelled_caught else None), None
    finally:
        del cancelled


def asyncio_only(storage: str) -> None:
    """Refuse to run a Redis storage step outside asyncio.

    redis-py's asyncio client cannot run under trio; failing open or
    closed silently would hide that, so the first async call says so.

    Raises:
        RuntimeError: If the running library is not asyncio, naming it
            and *storage*.
    """
    if "trio" in _modules:
        library = current_library()
        if library != "asyncio":
            msg = (
                f"{storage} needs asyncio: redis-py's asyncio client does not run "
                f"under {library}; under {library}, use memory storage, or call "
                f"the sync function through {library}.to_thread.run_sync"
            )
            raise RuntimeError(msg)


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
    task of its own, and the caller's cancellation is raised at once. Under
    trio the step runs in a shielded cancel scope: the caller's cancellation
    is delivered at its next checkpoint, once the step is done.
    """
    if running_trio():
        import trio  # noqa: PLC0415 - imported already when trio runs

        with trio.CancelScope(shield=True):
            return await step
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        in_background(task)
        raise
