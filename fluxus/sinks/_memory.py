"""Keep letters in a list: for tests and for short-lived processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fluxus._dead_letter import DeadLetter

from ._base import StoringSink, check_limit, first


class Memory(StoringSink):
    """Keep letters in memory, exceptions included; nothing survives the process.

    The letters are kept as built, so ``letter.error`` is the exception
    itself (with its traceback and the frames it references).
    """

    def __init__(self) -> None:
        self._letters: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<fluxus.sinks.Memory {len(self)} letters>"

    def __len__(self) -> int:
        return len(self._letters)

    def put(self, letter: DeadLetter) -> None:
        """Keep *letter*."""
        with self._lock:
            self._letters[letter.id] = letter

    async def aput(self, letter: DeadLetter) -> None:
        """Keep *letter*; nothing blocks, so no thread is needed."""
        self.put(letter)

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Return the letters, oldest first (a snapshot), at most *limit*."""
        check_limit(limit)
        with self._lock:
            return first(list(self._letters.values()), limit)

    def remove(self, letter_id: str) -> bool:
        """Forget the letter *letter_id*; return whether it was kept."""
        with self._lock:
            return self._letters.pop(letter_id, None) is not None

    def clear(self) -> int:
        """Forget every letter; return how many there were."""
        with self._lock:
            count = len(self._letters)
            self._letters.clear()
            return count
