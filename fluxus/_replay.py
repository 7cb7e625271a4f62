"""Re-drive dead letters: ``fluxus.replay`` and ``fluxus.replay_async``.

Several replays may run on one store at once (threads, processes,
machines): each claims a few letters before calling them, so no two call
one letter at the same time, and removes a letter only after its call
succeeded. A replayer that dies leaves claims that expire after
``claim_timeout`` seconds, and its letters become replayable again.

What to do with a letter (skip it, or call with which arguments) is decided
once, by :class:`_Plan`; :class:`_Tally` counts and sizes the claims. The
sync and the async driver only call, remove and release.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._aio import run_sync_in_thread
from ._dead_letter import DeadLetter, Sink
from ._validate import to_seconds

Progress = Callable[[int, int], object]
Fill = Mapping[str, Any] | Callable[[DeadLetter], Mapping[str, Any]]

#: The most letters one claim takes: enough to make claiming cheap, few
#: enough that a killed replayer holds little.
_MAX_BATCH = 100
_PLACE = re.compile(r"args\[(\d+)\]|kwargs\[(['\"])(.+)\2\]")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did.

    Letters another replayer had claimed are counted nowhere.

    Attributes:
        replayed: Letters whose call succeeded; they were removed.
        failed: Letters whose call raised; they were kept.
        skipped: Letters not called because an argument was redacted or
            stored as a placeholder (and ``fill`` did not give it), or
            (with ``function=``) whose function differs; they were kept.
        failures: Letter id -> the exception its call raised.
    """

    replayed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: dict[str, Exception] = field(default_factory=dict)


class _Plan:
    """Which letters are called, and with what: pure, decided per letter."""

    def __init__(
        self, func: Callable[..., Any], function: str | None, fill: Fill | None
    ) -> None:
        self.function = function
        self.fill = fill
        self.positional: list[str] = []
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            parameters = []
        kind = inspect.Parameter
        self.positional = [
            p.name
            for p in parameters
            if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        ]
        if isinstance(fill, Mapping) and parameters:
            known = {p.name for p in parameters}
            unknown = set(fill) - known
            if unknown and not any(p.kind is kind.VAR_KEYWORD for p in parameters):
                msg = f"fill names {sorted(unknown)!r}, which {func!r} does not take"
                raise ValueError(msg)

    def call(  # noqa: PLR0911 - one reason to skip per return
        self, letter: DeadLetter
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Return the arguments to call *letter* with, or ``None`` to skip it."""
        if self.function is not None and letter.function != self.function:
            return None
        if letter.replayable:
            return letter.args, letter.kwargs
        if self.fill is None:
            return None
        values = self.fill(letter) if callable(self.fill) else self.fill
        args, kwargs = list(letter.args), dict(letter.kwargs)
        for place in letter.placeholders:
            match = _PLACE.fullmatch(place)
            if match is None:
                return None
            if match.group(1) is not None:
                index = int(match.group(1))
                if index >= len(self.positional) or index >= len(args):
                    return None
                name = self.positional[index]
                if name not in values:
                    return None
                args[index] = values[name]
            else:
                name = match.group(3)
                if name not in values:
                    return None
                kwargs[name] = values[name]
        return tuple(args), kwargs


class _Tally:
    """Counts, progress and the size of the next claim."""

    def __init__(
        self, claim_timeout: float, total: int, progress: Progress | None
    ) -> None:
        self.claim_timeout = claim_timeout
        self.total = total
        self.progress = progress
        self.replayed = self.failed = self.skipped = 0
        self.failures: dict[str, Exception] = {}
        self.calls = 0
        self.call_time = 0.0

    def batch(self) -> int:
        """Claim what can be called in a quarter of the claim's lifetime."""
        if not self.calls:
            return 1
        mean = self.call_time / self.calls
        fit = math.floor(self.claim_timeout / 4 / mean) if mean > 0 else _MAX_BATCH
        return max(1, min(_MAX_BATCH, fit))

    def timed(self, started: float) -> None:
        self.calls += 1
        self.call_time += time.monotonic() - started

    def done(
        self,
        letter: DeadLetter,
        called: bool,  # noqa: FBT001 - internal, positional on purpose
        failure: Exception | None,
        expires: float,
    ) -> None:
        """Count *letter*: replayed, failed, skipped or (claim expired) not at all."""
        if not called:
            if time.monotonic() >= expires:
                return  # its claim expired: another replayer may hold it now
            self.skipped += 1
        elif failure is None:
            self.replayed += 1
        else:
            self.failed += 1
            self.failures[letter.id] = failure
        if self.progress is not None:
            done = self.replayed + self.failed + self.skipped
            self.progress(done, max(done, self.total))

    def result(self) -> ReplayResult:
        return ReplayResult(self.replayed, self.failed, self.skipped, self.failures)


class _Unclaimed:
    """Claims for a user's sink that only lists and removes: this process only."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._given: set[str] = set()

    def take(self, limit: int) -> list[DeadLetter]:
        taken = []
        for letter in self._sink.letters():
            if letter.id not in self._given:
                self._given.add(letter.id)
                taken.append(letter)
                if len(taken) >= limit:
                    break
        return taken

    def release(self, letter_id: str) -> None:
        """Nothing to give back: the letters were never claimed."""

    def remove(self, letter_ids: list[str]) -> int:
        return sum(1 for letter_id in letter_ids if self._sink.remove(letter_id))

    def flush(self) -> None:
        """Nothing to do: the sink removes durably."""


def _start(
    sink: Sink,
    func: object,
    function: str | None,
    fill: object,
    claim_timeout: object,
) -> tuple[Any, float]:
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
    if fill is not None and not isinstance(fill, Mapping) and not callable(fill):
        msg = f"fill must be a dict of parameter values or a callable, got {fill!r}"
        raise TypeError(msg)
    timeout = to_seconds(claim_timeout, "claim_timeout")
    if not timeout > 0:
        msg = f"claim_timeout must be > 0 seconds, got {claim_timeout!r}"
        raise ValueError(msg)
    claims = getattr(sink, "claims", None)
    return (claims(timeout) if callable(claims) else _Unclaimed(sink)), timeout


def _total(sink: Sink) -> int:
    count = getattr(sink, "count", None)
    return int(count()) if callable(count) else 0


def replay(
    sink: Sink,
    func: Callable[..., Any],
    *,
    function: str | None = None,
    fill: Fill | None = None,
    claim_timeout: float = 60.0,
    progress: Progress | None = None,
) -> ReplayResult:
    """Call *func* with each stored letter's arguments, oldest first.

    Args:
        sink: Where the letters are: any sink with ``letters()`` and
            ``remove(letter_id)``; the sinks of :mod:`fluxus.sinks` also
            claim letters, so that concurrent replays share the work.
        func: Called as ``func(*letter.args, **letter.kwargs)``; pass the
            undecorated function (a dead-lettered one would store a second
            letter for each failure). For letters of a method, pass the
            bound method (``client.get_quote``).
        function: Only replay letters of this ``module.qualname``; the
            others count as skipped.
        fill: The values of redacted arguments: a dict parameter name ->
            value, or a callable ``fill(letter) -> dict``. A letter whose
            placeholders are all filled is replayed.
        claim_timeout: Seconds a claim lasts; a replayer that dies holds
            its letters no longer than this.
        progress: Called as ``progress(done, total)`` after each letter.

    Returns:
        The counts of letters replayed (and removed), failed (kept) and
        skipped (kept), and why each failed.

    Raises:
        TypeError: If *func* is a coroutine function (use
            :func:`replay_async`) or *sink* is not a sink.
        ValueError: If *fill* names a parameter *func* does not take, or
            *claim_timeout* is not positive.
    """
    claims, timeout = _start(sink, func, function, fill, claim_timeout)
    if inspect.iscoroutinefunction(func):
        msg = f"{func!r} is a coroutine function: use await fluxus.replay_async()"
        raise TypeError(msg)
    plan = _Plan(func, function, fill)
    tally = _Tally(timeout, _total(sink), progress)
    durability = _Durability()
    pending: list[DeadLetter] = []
    try:
        while pending := claims.take(tally.batch()):
            expires = time.monotonic() + timeout
            while pending:
                letter = pending[0]
                call = plan.call(letter) if time.monotonic() < expires else None
                failure: Exception | None = None
                if call is not None:
                    started = time.monotonic()
                    try:
                        func(*call[0], **call[1])
                    except Exception as exc:  # noqa: BLE001 - a failure keeps the letter
                        failure = exc
                    tally.timed(started)
                if call is not None and failure is None:
                    claims.remove([letter.id])
                    durability.removed()
                else:
                    claims.release(letter.id)
                tally.done(letter, call is not None, failure, expires)
                pending.pop(0)
                if durability.due():
                    claims.flush()
                    durability.synced()
    finally:
        _settle_interrupted(claims, durability, pending)
    return tally.result()


class _Durability:
    """When to make removals durable: one fsync for many letters.

    Each removal is committed at once (it survives the replayer's death);
    it is synced to the disk within :attr:`WINDOW` seconds, so a power cut
    can undo only the removals of that last moment.
    """

    WINDOW = 0.25

    def __init__(self) -> None:
        self.unsynced = 0
        self.since = 0.0

    def removed(self) -> None:
        if not self.unsynced:
            self.since = time.monotonic()
        self.unsynced += 1

    def due(self) -> bool:
        return bool(self.unsynced) and time.monotonic() - self.since >= self.WINDOW

    def synced(self) -> None:
        self.unsynced = 0


def _settle_interrupted(
    claims: Any, durability: _Durability, pending: list[DeadLetter]
) -> None:
    """Sync the removals and give back the claims an interrupted replay holds."""
    if durability.unsynced:
        claims.flush()
    for letter in pending:
        try:
            claims.release(letter.id)
        except Exception:  # noqa: BLE001, S112 - they expire in any case
            continue


async def replay_async(
    sink: Sink,
    func: Callable[..., Awaitable[Any]] | Callable[..., Any],
    *,
    function: str | None = None,
    fill: Fill | None = None,
    claim_timeout: float = 60.0,
    progress: Progress | None = None,
) -> ReplayResult:
    """Call and await *func* with each stored letter's arguments, oldest first.

    The sink's reads, claims and removals run in a worker thread, so the
    event loop is never blocked on the disk. *func* may also be a plain
    function. The arguments are those of :func:`replay`.

    Returns:
        The counts of letters replayed, failed and skipped, and why each
        failed.

    Raises:
        TypeError: If *sink* is not a sink or *func* is not callable.
        ValueError: If *fill* names a parameter *func* does not take, or
            *claim_timeout* is not positive.
    """
    claims, timeout = _start(sink, func, function, fill, claim_timeout)
    plan = _Plan(func, function, fill)
    tally = _Tally(timeout, await run_sync_in_thread(_total, sink), progress)
    durability = _Durability()
    pending: list[DeadLetter] = []
    try:
        while pending := await run_sync_in_thread(claims.take, tally.batch()):
            expires = time.monotonic() + timeout
            while pending:
                letter = pending[0]
                call = plan.call(letter) if time.monotonic() < expires else None
                failure: Exception | None = None
                if call is not None:
                    started = time.monotonic()
                    try:
                        result = func(*call[0], **call[1])
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:  # noqa: BLE001 - a failure keeps the letter
                        failure = exc
                    tally.timed(started)
                if call is not None and failure is None:
                    await run_sync_in_thread(claims.remove, [letter.id])
                    durability.removed()
                else:
                    await run_sync_in_thread(claims.release, letter.id)
                tally.done(letter, call is not None, failure, expires)
                pending.pop(0)
                if durability.due():
                    await run_sync_in_thread(claims.flush)
                    durability.synced()
    finally:
        await run_sync_in_thread(_settle_interrupted, claims, durability, pending)
    return tally.result()
