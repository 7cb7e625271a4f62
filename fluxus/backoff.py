"""Backoff strategies: how long :func:`fluxus.retry` waits between attempts.

A strategy is any callable ``backoff(retry_index) -> seconds``, where
``retry_index`` is 0 for the wait before the second call, 1 before the
third, and so on. A callable with two positional parameters is called as
``backoff(retry_index, error)`` instead, so that the wait can listen to the
failure (``error`` is ``None`` when ``on_result`` rejected a returned value).
The ready ones here are pure and validated when built::

    fluxus.retry(5, backoff=fluxus.backoff.exponential(0.1, max=2.0, jitter=True))
    fluxus.retry(5, backoff=fluxus.backoff.retry_after(fluxus.backoff.constant(1)))

``retry`` also accepts a tenacity ``wait_*`` object as it is. A strategy is
called only for waits that happen: never after the last attempt.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from ._validate import to_seconds

__all__ = [
    "Backoff",
    "Constant",
    "ErrorBackoff",
    "Exponential",
    "Linear",
    "RetryAfter",
    "constant",
    "exponential",
    "linear",
    "retry_after",
]


class Backoff(Protocol):
    """What :func:`fluxus.retry` accepts as ``backoff``: seconds by retry index."""

    def __call__(self, retry_index: int, /) -> float:
        """Return the seconds to wait before retry number ``retry_index + 1``."""


class ErrorBackoff(Protocol):
    """A ``backoff`` that also sees the failure it waits after."""

    def __call__(self, retry_index: int, error: Exception | None, /) -> float:
        """Return the seconds to wait after *error* (``None``: a rejected result)."""


def takes_error(backoff: object, param: str = "backoff") -> bool:
    """Return whether *backoff* is called as ``backoff(retry_index, error)``.

    That is when it takes two positional parameters (or ``*args``); one that
    takes a single one is called as ``backoff(retry_index)``.

    Raises:
        TypeError: If it cannot take ``retry_index`` positionally.
    """
    try:
        parameters = inspect.signature(backoff).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            parameter.POSITIONAL_ONLY,
            parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
        elif (
            parameter.default is parameter.empty
            and parameter.kind is parameter.KEYWORD_ONLY
        ):
            positional = -1  # a required keyword-only parameter: unusable
            break
    if positional < 1:
        msg = (
            f"{param} must take retry_index (and optionally error) as positional "
            f"parameters, got {backoff!r}"
        )
        raise TypeError(msg)
    return positional >= 2  # noqa: PLR2004 - (retry_index, error)


@dataclass(frozen=True, slots=True)
class Constant:
    """Wait the same *delay* before every retry."""

    delay: float

    def __call__(self, retry_index: int, /) -> float:  # noqa: ARG002 - same for all
        """Return ``delay``."""
        return self.delay


@dataclass(frozen=True, slots=True)
class Linear:
    """Wait ``step * (retry_index + 1)``: step, 2 x step, 3 x step, ..."""

    step: float

    def __call__(self, retry_index: int, /) -> float:
        """Return ``step * (retry_index + 1)``."""
        return self.step * (retry_index + 1)


@dataclass(frozen=True, slots=True)
class Exponential:
    """Wait ``base * factor ** retry_index``, capped at *max*, maybe jittered.

    With ``jitter=True`` the wait is drawn uniformly between 0 and that value
    ("full jitter"), which spreads out clients that failed together.
    """

    base: float
    factor: float = 2.0
    max: float | None = None
    jitter: bool = False

    def __call__(self, retry_index: int, /) -> float:
        """Return the wait before retry number ``retry_index + 1``."""
        try:
            delay = self.base * self.factor**retry_index
        except OverflowError:
            delay = math.inf
        if self.max is not None:
            delay = min(delay, self.max)
        if self.jitter and math.isfinite(delay):
            delay = random.uniform(0.0, delay)  # noqa: S311 - not cryptography
        return delay


def constant(delay: float | timedelta) -> Constant:
    """Return a strategy that always waits *delay*.

    Raises:
        TypeError: If *delay* is not a duration.
        ValueError: If *delay* is negative or not finite.
    """
    return Constant(to_seconds(delay, "delay"))


def linear(step: float | timedelta) -> Linear:
    """Return a strategy that waits *step*, then twice *step*, and so on.

    Raises:
        TypeError: If *step* is not a duration.
        ValueError: If *step* is negative or not finite.
    """
    return Linear(to_seconds(step, "step"))


def exponential(
    base: float | timedelta,
    *,
    factor: float = 2.0,
    max: float | timedelta | None = None,  # noqa: A002 - the documented name
    jitter: bool = False,
) -> Exponential:
    """Return a strategy that waits *base*, then *factor* times longer each time.

    Args:
        base: The first wait.
        factor: The growth factor, at least 1.
        max: The longest wait, or ``None`` for no cap.
        jitter: Draw each wait uniformly between 0 and the computed value.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a duration is negative or *factor* is below 1.
    """
    seconds = to_seconds(base, "base")
    if not isinstance(factor, int | float) or isinstance(factor, bool):
        msg = f"factor must be a number, got {factor!r}"
        raise TypeError(msg)
    if not math.isfinite(factor) or factor < 1:
        msg = f"factor must be a finite number >= 1, got {factor!r}"
        raise ValueError(msg)
    cap = None if max is None else to_seconds(max, "max", allow_none=True)
    if not isinstance(jitter, bool):
        msg = f"jitter must be a bool, got {jitter!r}"
        raise TypeError(msg)
    return Exponential(seconds, float(factor), cap, jitter)


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Wait what the failure asks for; see :func:`retry_after`."""

    fallback: Backoff | ErrorBackoff | None = None
    max: float = 60.0
    fallback_takes_error: bool = False

    def __call__(self, retry_index: int, error: Exception | None, /) -> float:
        """Return the wait *error* asks for, else the fallback's, at most ``max``."""
        asked = None if error is None else _requested_wait(error)
        if asked is None:
            if self.fallback is None:
                return 0.0
            if self.fallback_takes_error:
                asked = self.fallback(retry_index, error)  # type: ignore[call-arg]
            else:
                asked = self.fallback(retry_index)  # type: ignore[call-arg]
            if isinstance(asked, timedelta):
                asked = asked.total_seconds()
        # Anything but a number above the cap goes back as it is: retry
        # reports a negative, NaN or non-number wait, naming backoff.
        if isinstance(asked, float | int) and asked > self.max:
            return self.max
        return asked


def _requested_wait(error: BaseException, *, now: float | None = None) -> float | None:
    """Return the seconds *error* asks the caller to wait, or ``None``.

    The error's own ``retry_after`` (seconds, as fluxus's rejections carry
    it) comes first, then the ``Retry-After`` header of its ``response`` (as
    httpx's ``HTTPStatusError`` and requests' ``HTTPError`` carry it): a
    number of seconds or an HTTP date. A value that cannot be read counts as
    none; a date in the past asks for no wait.

    Args:
        error: The exception.
        now: The current time (:func:`time.time`); tests pass a fixed one.
    """
    seconds = _seconds(getattr(error, "retry_after", None))
    if seconds is not None:
        return seconds
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except Exception:  # noqa: BLE001 - a foreign object that only looks like headers
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return _header_wait(value.strip(), time.time() if now is None else now)


def _header_wait(value: str, now: float) -> float | None:
    """Return the wait a ``Retry-After`` value asks for: seconds or a date."""
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with others
        when = when.replace(tzinfo=UTC)
    wait = when.timestamp() - now
    return max(0.0, wait) if math.isfinite(wait) else None


def _seconds(value: object) -> float | None:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def retry_after(
    fallback: Backoff | ErrorBackoff | None = None,
    *,
    max: float | timedelta = 60.0,  # noqa: A002 - the documented name
) -> RetryAfter:
    """Return a strategy that waits as long as the failure asks.

    The wait is the exception's ``retry_after`` attribute (seconds, as
    fluxus's own rejections carry it), else the ``Retry-After`` header of the
    exception's ``response`` (seconds or an HTTP date; httpx's
    ``HTTPStatusError`` and requests' ``HTTPError`` carry the response),
    else what *fallback* says; never more than *max*::

        @fluxus.retry(5, on=httpx.HTTPStatusError,
                      backoff=fluxus.backoff.retry_after(fluxus.backoff.exponential(0.5)))
        def fetch(): ...

    Args:
        fallback: The strategy for failures that ask for nothing (and for
            rejected results): a :mod:`fluxus.backoff` strategy or any
            ``backoff`` callable. ``None`` means no wait.
        max: The longest wait, whatever the server asks (a server asking for
            an hour should not hold a worker for an hour).

    Returns:
        A strategy to pass as ``backoff``.

    Raises:
        TypeError: If *fallback* is not a callable taking ``retry_index``,
            or *max* is not a duration.
        ValueError: If *max* is negative or not finite.
    """
    cap = to_seconds(max, "max")
    if fallback is not None and not callable(fallback):
        msg = f"fallback must be None or a backoff strategy, got {fallback!r}"
        raise TypeError(msg)
    with_error = fallback is not None and takes_error(fallback, "fallback")
    return RetryAfter(fallback, cap, with_error)
