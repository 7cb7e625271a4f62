"""One frozen event per decision a policy makes.

Events name the policy and the function and carry the numbers that matter;
they never carry the call's arguments, which may be secret.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every fluxus event.

    Attributes:
        policy: The policy's name (by default the first decorated function's).
        function: ``module.qualname`` of the protected function.
    """

    kind: ClassVar[str] = "event"
    level: ClassVar[int] = logging.INFO

    policy: str
    function: str

    def fields(self) -> dict[str, Any]:
        """Return the event's fields as a dict, for loggers and exporters."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """A call failed and will be tried again after *delay* seconds.

    Attributes:
        attempt: The number of the attempt that failed (1 for the first call).
        delay: Seconds fluxus waits before the next attempt.
        error_type: ``module.qualname`` of the exception.
        error_message: ``str()`` of the exception.
    """

    kind: ClassVar[str] = "retry_scheduled"
    level: ClassVar[int] = logging.WARNING

    attempt: int
    delay: float
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetriesExhausted(Event):
    """A call failed for good: fluxus re-raises its last exception.

    Attributes:
        attempts: How many calls were made.
        reason: Why no further attempt is made.
        error_type: ``module.qualname`` of the last exception.
        error_message: ``str()`` of the last exception.
    """

    kind: ClassVar[str] = "retries_exhausted"
    level: ClassVar[int] = logging.ERROR

    attempts: int
    reason: str
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(Event):
    """A failed call was handed to the dead letter queue's handler.

    Attributes:
        letter_id: The id of the :class:`~fluxus.DeadLetter`.
        error_type: ``module.qualname`` of the call's exception.
        error_message: ``str()`` of the call's exception.
    """

    kind: ClassVar[str] = "dead_lettered"
    level: ClassVar[int] = logging.WARNING

    letter_id: str
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterHandlerFailed(Event):
    """The dead letter queue's handler failed: the letter was not kept.

    The caller still sees the call's own exception.

    Attributes:
        letter_id: The id of the letter that was lost (empty if it could not
            even be built).
        error_type: ``module.qualname`` of the handler's exception.
        error_message: ``str()`` of the handler's exception.
    """

    kind: ClassVar[str] = "dead_letter_handler_failed"
    level: ClassVar[int] = logging.ERROR

    letter_id: str
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut(Event):
    """A call ran out of time: fluxus raised :class:`~fluxus.DeadlineExceeded`.

    Attributes:
        seconds: The time budget that ran out (shrunk by an enclosing deadline).
        strategy: How the timeout was enforced: ``"thread"``, ``"signal"``,
            ``"cooperative"`` or ``"asyncio"``.
        reason: What happened: the deadline passed during the call, had
            passed before it started, or no worker thread was free.
    """

    kind: ClassVar[str] = "timed_out"
    level: ClassVar[int] = logging.WARNING

    seconds: float
    strategy: str
    reason: str
