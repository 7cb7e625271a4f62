"""What the storing sinks share: the async entry point and their errors."""

from __future__ import annotations

from collections.abc import Iterable

from fluxus._aio import run_sync_in_thread
from fluxus._dead_letter import DeadLetter
from fluxus.exceptions import FluxusError


class SinkFull(FluxusError):
    """A bounded sink is full and refuses a letter rather than drop another."""


class CorruptRecordWarning(UserWarning):
    """A stored record could not be read and was skipped."""


class StoringSink:
    """Base of the sinks that keep letters; subclasses do the blocking I/O.

    ``aput`` runs ``put`` in a worker thread (asyncio's or trio's), so an
    fsync or a network round trip never blocks the event loop.
    """

    def put(self, letter: DeadLetter) -> None:
        """Store *letter*; it is durable when this returns."""
        raise NotImplementedError

    async def aput(self, letter: DeadLetter) -> None:
        """Store *letter* from async code, without blocking the event loop."""
        await run_sync_in_thread(self.put, letter)

    def letters(self) -> Iterable[DeadLetter]:
        """Return the stored letters, oldest first."""
        raise NotImplementedError

    def remove(self, letter_id: str) -> bool:
        """Remove the letter *letter_id*; return whether it was stored."""
        raise NotImplementedError

    def clear(self) -> int:
        """Remove every stored letter; return how many there were."""
        raise NotImplementedError

    def get(self, letter_id: str) -> DeadLetter | None:
        """Return the letter *letter_id*, or ``None`` if it is not stored."""
        for letter in self.letters():
            if letter.id == letter_id:
                return letter
        return None
