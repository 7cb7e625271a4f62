"""Exceptions and warnings raised by fluxus.

The error tree::

    Exception
     +-- FluxusError
          +-- CircuitOpenError        a circuit breaker refused the call
          +-- RateLimitExceeded       no rate-limit permit within the timeout
          +-- DeadlineExceeded        a timeout ran out (also a TimeoutError)
               +-- ThreadsExhausted   no timeout worker thread was free

Warning:
     +-- LayeringWarning              hand-stacked policies in a bad order

Everything fluxus raises on its own behalf is a :class:`FluxusError`; the
exceptions of the functions it protects pass through unchanged.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "DeadlineExceeded",
    "FluxusError",
    "LayeringWarning",
    "RateLimitExceeded",
    "ThreadsExhausted",
]


class FluxusError(Exception):
    """Base class of every error fluxus raises on its own behalf."""


class CircuitOpenError(FluxusError):
    """A circuit breaker refused the call without running it.

    Attributes:
        name: The name of the circuit breaker.
        retry_after: Seconds until the breaker lets a trial call through.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        # BaseException.__new__ has already set args to (name, retry_after);
        # the message is built when it is read: an open circuit raises this
        # on every call, and most callers only look at the type.
        self.name = name
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"circuit {self.name!r} is open; retry after {self.retry_after:.3f}s"

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        return (type(self), (self.name, self.retry_after))


class RateLimitExceeded(FluxusError):
    """A rate limiter found no permit within the caller's timeout.

    Attributes:
        name: The name of the rate limiter.
        retry_after: Seconds until a permit is expected to be free.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(
            f"rate limit {name!r} exceeded; retry after {retry_after:.3f}s"
        )

    def __reduce__(self) -> tuple[type[RateLimitExceeded], tuple[str, float]]:
        return (type(self), (self.name, self.retry_after))


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


class ThreadsExhausted(DeadlineExceeded):
    """A thread timeout refused the call: all its worker threads were busy.

    Raised at once, without calling the function, rather than queueing the
    call past its deadline. Calls abandoned at their deadline keep their
    worker thread until they return, so this usually means the protected
    function hangs.

    Attributes:
        name: The name of the timeout policy.
        seconds: The time budget the call had.
        threads: The policy's thread bound (``max_threads``).
    """

    def __init__(self, name: str, seconds: float, threads: int) -> None:
        super().__init__(name, seconds)
        self.threads = threads
        message = (
            f"{name!r} was not started: all {threads} worker threads of its "
            "fluxus.timeout are busy (with calls still running, some perhaps "
            "abandoned at their deadline); raise max_threads or make the "
            "function honour fluxus.remaining()"
        )
        self.args = (message,)

    def __reduce__(self) -> tuple[type[ThreadsExhausted], tuple[str, float, int]]:  # type: ignore[override]
        return (type(self), (self.name, self.seconds, self.threads))


class LayeringWarning(UserWarning):
    """Policies were stacked by hand in an order that defeats one of them.

    The recommended order, outermost first, is dead letter, rate limit,
    circuit breaker, timeout, retry; :func:`fluxus.stack` applies it.
    """
