"""What the storing sinks share: the async entry point, claims and errors.

A replayer never calls a letter another replayer is calling: it first
*claims* letters through :meth:`StoringSink.claims`, and a claim lasts until
the replayer removes the letter (after its call succeeded) or releases it
(after a failure) or until it expires, so that a replayer killed mid-way leaves
nothing stuck. Each store claims with its own means: a claimed-until column
(SQLite), claim records beside the file under its lock (JSON Lines), a
consumer group (Redis streams).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol

from fluxus._aio import run_sync_in_thread
from fluxus._dead_letter import DeadLetter
from fluxus.exceptions import FluxusError


class SinkFull(FluxusError):
    """A bounded sink is full and refuses a letter rather than drop another."""


class CorruptRecordWarning(UserWarning):
    """A stored record could not be read and was skipped."""


class Claims(Protocol):
    """One replayer's hold on a store: what :func:`fluxus.replay` drives."""

    def take(self, limit: int) -> list[DeadLetter]:
        """Claim up to *limit* letters, oldest first; ``[]`` when none is left.

        Letters claimed by another replayer (and not expired), and letters
        this replayer was already given, are passed over.
        """

    def release(self, letter_id: str) -> None:
        """Give the claim on *letter_id* back (its call failed or never ran)."""

    def remove(self, letter_ids: list[str]) -> int:
        """Remove the letters *letter_ids*, whose calls succeeded; return how many.

        The removal survives the replayer's death at once; it survives a
        power cut once :meth:`flush` returns.
        """

    def flush(self) -> None:
        """Make the removals so far durable (fsync)."""


class StoringSink:
    """Base of the sinks that keep letters; subclasses do the blocking I/O.

    ``aput`` runs ``put`` in a worker thread, so an fsync or a network round
    trip never blocks the event loop.
    """

    def put(self, letter: DeadLetter) -> None:
        """Store *letter*; it is durable when this returns."""
        raise NotImplementedError

    async def aput(self, letter: DeadLetter) -> None:
        """Store *letter* from async code, without blocking the event loop."""
        await run_sync_in_thread(self.put, letter)

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Yield the stored letters, oldest first, at most *limit* of them.

        The letters are read as they are yielded: memory does not grow with
        the store.
        """
        raise NotImplementedError

    def count(self) -> int:
        """Return how many letters are stored."""
        return sum(1 for _ in self.letters())

    def remove(self, letter_id: str) -> bool:
        """Remove the letter *letter_id*; return whether it was stored."""
        raise NotImplementedError

    def remove_many(self, letter_ids: Iterable[str]) -> int:
        """Remove the letters *letter_ids*; return how many were stored."""
        return sum(1 for letter_id in letter_ids if self.remove(letter_id))

    def clear(self) -> int:
        """Remove every stored letter; return how many there were."""
        raise NotImplementedError

    def get(self, letter_id: str) -> DeadLetter | None:
        """Return the letter *letter_id*, or ``None`` if it is not stored."""
        for letter in self.letters():
            if letter.id == letter_id:
                return letter
        return None

    def claims(self, timeout: float) -> Claims:
        """Return a new replayer's claims; each lasts *timeout* seconds.

        The base class claims within this process only; the storing sinks
        of :mod:`fluxus.sinks` claim across processes and machines.
        """
        return LocalClaims(self, timeout)


def check_limit(limit: int | None) -> int | None:
    """Return *limit* checked: ``None`` or an int >= 0.

    Raises:
        ValueError: If it is neither.
    """
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
    ):
        msg = f"limit must be None or an int >= 0, got {limit!r}"
        raise ValueError(msg)
    return limit


def first(letters: Iterable[DeadLetter], limit: int | None) -> Iterator[DeadLetter]:
    """Yield at most *limit* of *letters* (all with ``None``)."""
    return iter(letters) if limit is None else itertools.islice(letters, limit)


def new_owner() -> str:
    """Return a name for one replayer, unique across machines."""
    return uuid.uuid4().hex


def check_path(path: object, param: str = "path") -> Path:
    """Return *path*, a file's path, as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If it is neither a string nor an ``os.PathLike``.
        ValueError: If it is empty.
    """
    if not isinstance(path, str | os.PathLike):
        msg = f"{param} must be a file path (str or os.PathLike), got {path!r}"
        raise TypeError(msg)
    if not os.fspath(path):
        msg = f"{param} must be a file path (str or os.PathLike), got {path!r}"
        raise ValueError(msg)
    return Path(path)


def check_writable(path: Path) -> None:
    """Fail now if the store at *path* could not be written.

    A sink in a missing or read-only directory would otherwise be accepted
    and then lose every letter given to it.

    Raises:
        OSError: If the file (or, before it exists, a file beside it)
            cannot be opened for writing.
    """
    if path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        return
    try:
        fd, probe = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".probe"
        )
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        what = f"path must be a file that can be written, {reason}"
        raise type(exc)(exc.errno, what, str(path)) from exc
    os.close(fd)
    Path(probe).unlink()


class LocalClaims:
    """Claims kept in this process, for sinks without a shared claim store."""

    #: Held letters by sink, weakly: a sink built later at the address of
    #: one that is gone must not inherit its holds.
    _held: ClassVar[weakref.WeakKeyDictionary[StoringSink, dict[str, float]]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, sink: StoringSink, timeout: float) -> None:
        self._sink = sink
        self._timeout = timeout
        self._given: set[str] = set()

    def take(self, limit: int) -> list[DeadLetter]:
        """Claim up to *limit* letters not yet given and not held elsewhere."""
        taken: list[DeadLetter] = []
        now = time.monotonic()
        with self._lock:
            held = self._held.setdefault(self._sink, {})
            for letter in self._sink.letters():
                if len(taken) >= limit:
                    break
                if letter.id in self._given or held.get(letter.id, 0.0) > now:
                    continue
                held[letter.id] = now + self._timeout
                self._given.add(letter.id)
                taken.append(letter)
        return taken

    def release(self, letter_id: str) -> None:
        """Give the letter back."""
        with self._lock:
            self._held.get(self._sink, {}).pop(letter_id, None)

    def remove(self, letter_ids: list[str]) -> int:
        """Remove the letters, whose calls succeeded."""
        for letter_id in letter_ids:
            self.release(letter_id)
        return self._sink.remove_many(letter_ids)

    def flush(self) -> None:
        """Nothing to do: the sink removes durably."""
