"""Exceptions and warnings raised by fluxus.

The error tree::

    Exception
     +-- FluxusError
          +-- CircuitOpenError      * a circuit breaker refused the call
                                      (also a pybreaker.CircuitBreakerError)
          +-- RateLimitExceeded     * no rate-limit permit within the timeout
          +-- BulkheadFull          * no bulkhead slot within the timeout
          +-- ThreadsExhausted      * too many abandoned timeout threads
          +-- DeadlineExceeded        a timeout ran out (also a TimeoutError)

    (* a rejection)

Warning:
     +-- LayeringWarning              hand-stacked policies in a bad order
     +-- TransactionWarning           a timeout ran in the caller's transaction

Everything fluxus raises on its own behalf is a :class:`FluxusError`; the
exceptions of the functions it protects pass through unchanged.

A *rejection* is fluxus refusing to start the work: the function was not
called, so nothing it does happened. :func:`is_rejection` tells them apart
from failures: a rejection is never retried, never counts as a circuit
breaker failure, and is usually not worth a dead letter (the client is told
to come back; replaying it would run the work twice).
"""

from __future__ import annotations

import functools
from typing import Any

import pybreaker

__all__ = [
    "BulkheadFull",
    "CircuitOpenError",
    "DeadlineExceeded",
    "FluxusError",
    "LayeringWarning",
    "RateLimitExceeded",
    "ThreadsExhausted",
    "TransactionWarning",
    "is_rejection",
]


class FluxusError(Exception):
    """Base class of every error fluxus raises on its own behalf."""


class CircuitOpenError(FluxusError, pybreaker.CircuitBreakerError):
    """A circuit breaker refused the call without running it.

    It is also a ``pybreaker.CircuitBreakerError``, so code written against
    pybreaker (``except pybreaker.CircuitBreakerError:``) keeps catching it.

    Attributes:
        name: The name of the circuit breaker.
        retry_after: Seconds until the breaker lets a trial call through.
        storage: The storage (its password masked) when the call was
            refused because that storage is unreachable and the breaker
            fails closed (``fail_open=False``), else ``None``.
    """

    def __init__(
        self, name: str, retry_after: float, storage: str | None = None
    ) -> None:
        # BaseException.__new__ has already set args to (name, retry_after);
        # the message is built when it is read: an open circuit raises this
        # on every call, and most callers only look at the type.
        self.name = name
        self.retry_after = retry_after
        self.storage = storage

    def __str__(self) -> str:
        if self.storage is not None:
            return (
                f"circuit {self.name!r} refused the call: its storage "
                f"{self.storage} is unreachable (fail_open=False); retry after "
                f"{self.retry_after:.3f}s"
            )
        return f"circuit {self.name!r} is open; retry after {self.retry_after:.3f}s"

    def __reduce__(
        self,
    ) -> tuple[type[CircuitOpenError], tuple[str, float, str | None]]:
        return (type(self), (self.name, self.retry_after, self.storage))


class RateLimitExceeded(FluxusError):
    """A rate limiter found no permit within the caller's timeout.

    Attributes:
        name: The name of the rate limiter.
        retry_after: Seconds until a permit is expected to be free.
        storage: The storage (its password masked) when the call was
            refused because that storage is unreachable and the limiter
            fails closed (``fail_open=False``), else ``None``.
    """

    def __init__(
        self, name: str, retry_after: float, storage: str | None = None
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self.storage = storage
        if storage is not None:
            message = (
                f"rate limit {name!r} refused the call: its storage {storage} "
                f"is unreachable (fail_open=False); retry after {retry_after:.3f}s"
            )
        else:
            message = f"rate limit {name!r} exceeded; retry after {retry_after:.3f}s"
        super().__init__(message)

    def __reduce__(
        self,
    ) -> tuple[type[RateLimitExceeded], tuple[str, float, str | None]]:
        return (type(self), (self.name, self.retry_after, self.storage))


class DeadlineExceeded(FluxusError, TimeoutError):
    """A deadline ran out before the call finished.

    Attributes:
        name: The name of the timeout policy.
        seconds: The time budget that ran out.
    """

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(f"{name!r} did not finish within {seconds:.3f}s")

    def __reduce__(self) -> tuple[type[DeadlineExceeded], tuple[str, float]]:
        return (type(self), (self.name, self.seconds))


class ThreadsExhausted(FluxusError):
    """A thread timeout refused the call: too many abandoned calls still run.

    Raised at once, without calling the function. Calls abandoned at their
    deadline keep their worker thread until they return; ``max_threads``
    bounds how many such threads one policy may hold, so this means the
    protected function hangs. It is a rejection, not a deadline: no
    deadline was reached.

    Attributes:
        name: The name of the timeout policy.
        seconds: The time budget the call had.
        threads: The policy's bound on abandoned threads (``max_threads``).
        retry_after: Always ``None``: nobody knows when a hung call returns.
    """

    retry_after: float | None = None

    def __init__(self, name: str, seconds: float, threads: int) -> None:
        self.name = name
        self.seconds = seconds
        self.threads = threads
        super().__init__(
            f"{name!r} was not started: {threads} calls of its fluxus.timeout "
            "outlived their deadline and still hold their worker threads "
            "(max_threads); the function hangs: make it honour "
            "fluxus.remaining() or raise max_threads"
        )

    def __reduce__(self) -> tuple[type[ThreadsExhausted], tuple[str, float, int]]:
        return (type(self), (self.name, self.seconds, self.threads))


class BulkheadFull(FluxusError):
    """A bulkhead refused the call: every slot and waiting place was taken.

    Attributes:
        name: The name of the bulkhead.
        max_concurrent: The bulkhead's limit on calls running at once.
        storage: The shared storage that could not be reached (with
            ``fail_open=False``), its password masked; ``None`` when the
            bulkhead was simply full.
        retry_after: Always ``None``: when a slot frees depends on the calls.
    """

    retry_after: float | None = None

    def __init__(
        self, name: str, max_concurrent: int, *, storage: str | None = None
    ) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.storage = storage
        if storage is None:
            message = (
                f"bulkhead {name!r} is full: {max_concurrent} calls already run "
                "and no waiting place was free in time"
            )
        else:
            message = (
                f"bulkhead {name!r} refused the call: its storage {storage} is "
                "unreachable (fail_open=False)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            functools.partial(type(self), storage=self.storage),
            (self.name, self.max_concurrent),
        )


REJECTIONS: tuple[type[FluxusError], ...] = (
    CircuitOpenError,
    RateLimitExceeded,
    BulkheadFull,
    ThreadsExhausted,
)
"""fluxus's own refusals, the exception types :func:`is_rejection` accepts."""


def is_rejection(exc: BaseException) -> bool:
    """Return whether ``exc`` is fluxus refusing to start the work.

    True for :class:`CircuitOpenError`, :class:`RateLimitExceeded`,
    :class:`BulkheadFull` and :class:`ThreadsExhausted`: the protected
    function was not called. Use it to keep rejections out of dead letters
    on web views, where the client is told to come back::

        fluxus.dead_letter(sink, should_dlq=lambda e: not fluxus.is_rejection(e))

    Args:
        exc: Any exception.

    Returns:
        Whether ``exc`` is one of fluxus's rejections.
    """
    return isinstance(exc, REJECTIONS)


class LayeringWarning(UserWarning):
    """Policies were stacked by hand in an order that defeats one of them.

    The recommended order, outermost first, is fallback, dead letter, rate
    limit, bulkhead, circuit breaker, timeout, retry, hedge;
    :func:`fluxus.stack` applies it.
    """


class TransactionWarning(UserWarning):
    """A thread timeout ran its call in the caller's thread to stay in its transaction.

    Work moved to another thread would leave the caller's database
    transaction; fluxus runs it in the calling thread with its deadline
    published instead (as ``strategy="cooperative"`` does).
    """
