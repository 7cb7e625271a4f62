"""Backoff strategies: how long :func:`fluxus.retry` waits between attempts.

A strategy is any callable ``backoff(retry_index) -> seconds``, where
``retry_index`` is 0 for the wait before the second call, 1 before the
third, and so on. The ready ones here are pure and validated when built::

    fluxus.retry(5, backoff=fluxus.backoff.exponential(0.1, max=2.0, jitter=True))

``retry`` also accepts a tenacity ``wait_*`` object as it is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._validate import to_seconds

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = [
    "Backoff",
    "Constant",
    "Exponential",
    "Linear",
    "constant",
    "exponential",
    "linear",
]


class Backoff(Protocol):
    """What :func:`fluxus.retry` accepts as ``backoff``."""

    def __call__(self, retry_index: int, /) -> float:
        """Return the seconds to wait before retry number ``retry_index + 1``."""


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
