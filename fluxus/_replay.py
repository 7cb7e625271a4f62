"""Re-drive dead letters: ``fluxus.replay`` and ``fluxus.replay_async``.

Each letter is removed as soon as its call succeeds, so an interrupted
replay can simply be run again: at most the one letter in flight is called
twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._aio import run_sync_in_thread
from ._dead_letter import DeadLetter, Sink

Progress = Callable[[int, int], object]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        replayed: Letters whose call succeeded; they were removed.
        failed: Letters whose call raised; they were kept.
        skipped: Letters not called because an argument was redacted or
            stored as its ``repr``, or (with ``function=``) whose function
            differs; they were kept.
    """

    replayed: int = 0
    failed: int = 0
    skipped: int = 0


def _check(sink: object, func: object, function: str | None) -> None:
    for method in ("letters", "remove"):
        if not callable(getattr(sink, method, None)):
            msg = f"sink must offer letters() and remove(letter_id), got {sink!r}"
            raise TypeError(msg)
    if not callable(func):
        msg = f"func must be callable, got {func!r}"
        raise TypeError(msg)
    if function is not None and not isinstance(function, str):
        msg = f"function must be a module.qualname string or None, got {function!r}"
        raise TypeError(msg)


def _wanted(letter: DeadLetter, function: str | None) -> bool:
    return letter.replayable and (function is None or letter.function == function)


def replay(
    sink: Sink,
    func: Callable[..., Any],
    *,
    function: str | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Call *func* with each stored letter's arguments, oldest first.

    Args:
        sink: Where the letters are: any sink with ``letters()`` and
            ``remove(letter_id)``.
        func: Called as ``func(*letter.args, **letter.kwargs)``; pass the
            undecorated function, or a dead-lettered one would store a
            second letter for each failure.
        function: Only replay letters of this ``module.qualname``; the
            others count as skipped.
        progress: Called as ``progress(done, total)`` after each letter.

    Returns:
        The counts of letters replayed (and removed), failed (kept) and
        skipped (kept).

    Raises:
        TypeError: If *func* is a coroutine function (use
            :func:`replay_async`) or *sink* is not a sink.
    """
    _check(sink, func, function)
    if inspect.iscoroutinefunction(func):
        msg = f"{func!r} is a coroutine function: use await fluxus.replay_async()"
        raise TypeError(msg)
    letters = list(sink.letters())
    replayed = failed = skipped = 0
    for done, letter in enumerate(letters, 1):
        if not _wanted(letter, function):
            skipped += 1
        else:
            try:
                func(*letter.args, **letter.kwargs)
            except Exception:  # noqa: BLE001 - a failure keeps the letter
                failed += 1
            else:
                sink.remove(letter.id)
                replayed += 1
        if progress is not None:
            progress(done, len(letters))
    return ReplayResult(replayed, failed, skipped)


async def replay_async(
    sink: Sink,
    func: Callable[..., Awaitable[Any]] | Callable[..., Any],
    *,
    function: str | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Call and await *func* with each stored letter's arguments, oldest first.

    The sink's reads and removals run in a worker thread, so the event
    loop is never blocked on the disk. *func* may also be a plain function.
    The arguments are those of :func:`replay`.

    Returns:
        The counts of letters replayed, failed and skipped.

    Raises:
        TypeError: If *sink* is not a sink or *func* is not callable.
    """
    _check(sink, func, function)
    letters = await run_sync_in_thread(lambda: list(sink.letters()))
    replayed = failed = skipped = 0
    for done, letter in enumerate(letters, 1):
        if not _wanted(letter, function):
            skipped += 1
        else:
            try:
                result = func(*letter.args, **letter.kwargs)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - a failure keeps the letter
                failed += 1
            else:
                await run_sync_in_thread(sink.remove, letter.id)
                replayed += 1
        if progress is not None:
            progress(done, len(letters))
    return ReplayResult(replayed, failed, skipped)
