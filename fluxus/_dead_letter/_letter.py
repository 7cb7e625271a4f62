"""A dead letter, what a sink offers, and what a handler is."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime

#: What a redacted argument is replaced with, in memory and in storage.
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One failed call, as a dead letter queue keeps it.

    Attributes:
        id: A unique id (32 hex digits).
        function: ``module.qualname`` of the function that failed.
        args: The positional arguments (redacted names masked); for a
            method, those after ``self`` or ``cls``.
        kwargs: The keyword arguments (redacted names masked).
        error: The exception; ``None`` once the letter went through storage.
        error_type: ``module.qualname`` of the exception's class.
        error_message: ``str()`` of the exception.
        traceback: The formatted traceback.
        failed_at: When the call failed (timezone-aware, UTC).
        placeholders: The arguments not kept as given (``args[1]``,
            ``kwargs['token']``): redacted, or stored as their ``repr``
            because they could not be serialized. Replay skips such letters
            unless its ``fill`` gives the missing values.
    """

    id: str
    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    error: BaseException | None
    error_type: str
    error_message: str
    traceback: str
    failed_at: datetime
    placeholders: tuple[str, ...] = ()

    @property
    def replayable(self) -> bool:
        """Whether every argument was kept as given, so the call can be redone."""
        return not self.placeholders

    def replace(self, **changes: Any) -> DeadLetter:
        """Return a copy of the letter with *changes* applied."""
        return dataclasses.replace(self, **changes)


@runtime_checkable
class Sink(Protocol):
    """What a dead letter store offers; see :mod:`fluxus.sinks`.

    A sink may also offer ``async aput(letter)``, which async functions use.
    """

    def put(self, letter: DeadLetter) -> object:
        """Store *letter*; it is durable when this returns."""

    def letters(self) -> Iterable[DeadLetter]:
        """Return the stored letters, oldest first.

        The sinks of :mod:`fluxus.sinks` stream them and take ``limit=``.
        """

    def remove(self, letter_id: str) -> object:
        """Remove the letter with id *letter_id*, if it is stored."""


Handler = Callable[[DeadLetter], object]
