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
        error_type: ``module.qualname`` of the exception, or ``None`` when
            ``on_result`` rejected a returned value.
        error_message: ``str()`` of the exception, or ``None``.
    """

    kind: ClassVar[str] = "retry_scheduled"
    level: ClassVar[int] = logging.WARNING

    attempt: int
    delay: float
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetriesExhausted(Event):
    """A call failed for good: fluxus re-raises its last exception.

    When ``on_result`` rejected the last attempt's value, fluxus returns that
    value instead, and *reason* starts with ``on_result rejected the result``.

    Attributes:
        attempts: How many calls were made.
        reason: Why no further attempt is made.
        error_type: ``module.qualname`` of the last exception, or ``None``
            when the last attempt returned a rejected value.
        error_message: ``str()`` of the last exception, or ``None``.
    """

    kind: ClassVar[str] = "retries_exhausted"
    level: ClassVar[int] = logging.ERROR

    attempts: int
    reason: str
    error_type: str | None
    error_message: str | None


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
class RateLimited(Event):
    """A rate limiter refused a call: no permit within the caller's timeout.

    Attributes:
        retry_after: Seconds until a permit is expected to be free.
        timeout: The caller's timeout in seconds (``None``: no limit).
    """

    kind: ClassVar[str] = "rate_limited"
    level: ClassVar[int] = logging.WARNING

    retry_after: float
    timeout: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageUnavailable(Event):
    """A policy could not reach its shared storage (Redis, ...).

    The base of :class:`CircuitStorageUnavailable` and
    :class:`RateLimitStorageUnavailable`: a hook that watches storage
    outages checks for this class. Emitted once per outage.

    Attributes:
        storage: The storage, its password masked.
        fail_open: Whether calls are let through until the storage is back.
        error_type: ``module.qualname`` of the storage error.
        error_message: ``str()`` of the storage error, password masked.
    """

    kind: ClassVar[str] = "storage_unavailable"
    level: ClassVar[int] = logging.ERROR

    storage: str
    fail_open: bool
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageRecovered(Event):
    """A policy reached its shared storage again after an outage.

    The base of :class:`CircuitStorageRecovered` and
    :class:`RateLimitStorageRecovered`.

    Attributes:
        storage: The storage, its password masked.
    """

    kind: ClassVar[str] = "storage_recovered"
    level: ClassVar[int] = logging.INFO

    storage: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitStorageUnavailable(StorageUnavailable):
    """A rate limiter could not reach its storage; see :class:`StorageUnavailable`.

    ``storage`` is the storage URI; ``fail_open`` says whether calls are
    admitted until the storage is back.
    """

    kind: ClassVar[str] = "rate_limit_storage_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitStorageRecovered(StorageRecovered):
    """A rate limiter reached its storage again; see :class:`StorageRecovered`."""

    kind: ClassVar[str] = "rate_limit_storage_recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(Event):
    """A circuit breaker moved from one state to another.

    Attributes:
        old_state: The state before: ``"closed"``, ``"open"`` or ``"half-open"``.
        new_state: The state after.
        reason: Why it moved (``"5 consecutive failures"``, ``"reset by hand"``).
        error_type: ``module.qualname`` of the exception that opened it, or
            ``None`` when no exception did.
        error_message: ``str()`` of that exception, or ``None``.

    ``function`` is empty when ``.reset()`` or ``.open()`` moved it.
    """

    kind: ClassVar[str] = "circuit_state_changed"
    level: ClassVar[int] = logging.WARNING

    old_state: str
    new_state: str
    reason: str
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitRejected(Event):
    """An open circuit breaker refused a call without running it.

    Attributes:
        state: ``"open"``, or ``"half-open"`` when every trial slot is taken.
        retry_after: Seconds until a trial call may run.
    """

    kind: ClassVar[str] = "circuit_rejected"
    level: ClassVar[int] = logging.INFO

    state: str
    retry_after: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStorageUnavailable(StorageUnavailable):
    """A circuit breaker could not reach its storage; see :class:`StorageUnavailable`.

    Calls are let through (``fail_open``) or rejected until it answers again.
    """

    kind: ClassVar[str] = "circuit_storage_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStorageRecovered(StorageRecovered):
    """A circuit breaker reached its storage again; see :class:`StorageRecovered`."""

    kind: ClassVar[str] = "circuit_storage_recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut(Event):
    """A call ran out of time: fluxus raised :class:`~fluxus.DeadlineExceeded`.

    Attributes:
        seconds: The time budget that ran out (shrunk by an enclosing deadline).
        strategy: How the timeout was enforced: ``"thread"``, ``"signal"``,
            ``"cooperative"``, ``"asyncio"`` or ``"trio"`` (an ``async def``
            call cancelled under that library).
        reason: What happened: the deadline passed during the call, had
            passed before it started, or no worker thread was free.
    """

    kind: ClassVar[str] = "timed_out"
    level: ClassVar[int] = logging.WARNING

    seconds: float
    strategy: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A call failed and the caller got the fallback's value or handler's answer.

    Attributes:
        error_type: ``module.qualname`` of the call's exception.
        error_message: ``str()`` of the call's exception.
    """

    kind: ClassVar[str] = "fallback_used"
    level: ClassVar[int] = logging.WARNING

    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(Event):
    """A full bulkhead refused a call: :class:`~fluxus.BulkheadFull`.

    Attributes:
        max_concurrent: The bulkhead's limit on calls running at once.
        max_waiting: How many callers may wait for a slot.
        waited: Seconds the caller waited before it was refused (0 when
            every waiting place was taken).
    """

    kind: ClassVar[str] = "bulkhead_rejected"
    level: ClassVar[int] = logging.WARNING

    max_concurrent: int
    max_waiting: int
    waited: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadStorageUnavailable(StorageUnavailable):
    """A bulkhead could not reach its storage; see :class:`StorageUnavailable`.

    Calls run without a slot (``fail_open``) or are refused until it answers.
    """

    kind: ClassVar[str] = "bulkhead_storage_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadStorageRecovered(StorageRecovered):
    """A bulkhead reached its storage again; see :class:`StorageRecovered`."""

    kind: ClassVar[str] = "bulkhead_storage_recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(Event):
    """A call was slow (or failed), so a hedge started another one.

    Attributes:
        hedge: The number of the extra call (1 for the first hedge).
        after: Seconds since the original call started.
        reason: ``"slow"`` (the delay passed) or ``"failed"`` (the latest
            call failed with an error matching ``on``).
    """

    kind: ClassVar[str] = "hedge_started"
    level: ClassVar[int] = logging.INFO

    hedge: int
    after: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeWon(Event):
    """An extra call started by a hedge returned first; the others were cancelled.

    Attributes:
        hedge: The number of the winning extra call (1 for the first hedge).
        after: Seconds since the original call started.
    """

    kind: ClassVar[str] = "hedge_won"
    level: ClassVar[int] = logging.INFO

    hedge: int
    after: float
