"""Helpers for the test suites of code that uses fluxus.

::

    with fluxus.testing.testing():          # backoff waits are instant
        with fluxus.testing.capture_events() as events:
            client.fetch()
    assert [e.kind for e in events] == ["retry_scheduled"]

Installing fluxus also gives pytest two fixtures (see
:mod:`fluxus._pytest_plugin`): ``fluxus_testing`` and ``fluxus_events``.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import ParamSpec, TypeVar, cast

from . import _aio
from ._config import CONFIG, TestingMode
from ._validate import positive_int, to_seconds
from .instrumentation._events import Event
from .instrumentation._hooks import add_hook, remove_hook

__all__ = ["capture_events", "flaky", "is_testing", "set_testing", "testing"]

P = ParamSpec("P")
T = TypeVar("T")

ErrorSpec = type[BaseException] | BaseException | Callable[[], BaseException]


class _Restore:
    """Returned by :func:`set_testing`; restores the previous mode on exit."""

    def __init__(self, previous: TestingMode) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with CONFIG.lock:
            CONFIG.testing = self._previous


def set_testing(on: bool, *, attempts: int | None = None) -> _Restore:  # noqa: FBT001
    """Switch the testing mode on or off for the whole process.

    In testing mode every backoff and rate-limit wait is instant.

    Args:
        on: Whether the testing mode is on.
        attempts: With *on*, cap every retry at this many attempts in all
            (``1`` turns retries off); ``None`` keeps the policies' own.

    Returns:
        A context manager that restores the previous mode when it exits, so
        ``with set_testing(True):`` works too.

    Raises:
        TypeError: If *attempts* is not an int.
        ValueError: If *attempts* is below 1.
    """
    if attempts is not None:
        positive_int(attempts, "attempts")
    with CONFIG.lock:
        previous = CONFIG.testing
        CONFIG.testing = TestingMode(active=bool(on), attempts=attempts)
    return _Restore(previous)


def is_testing() -> bool:
    """Return whether the testing mode is on."""
    return CONFIG.testing.active


@contextmanager
def testing(*, attempts: int | None = None) -> Iterator[None]:  # noqa: PT028
    """Turn the testing mode on inside a ``with`` block; see :func:`set_testing`."""
    with set_testing(True, attempts=attempts):
        yield


# Test runners must not collect this helper when a test module imports it.
testing.__test__ = False  # type: ignore[attr-defined]


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect the events emitted, from any thread, inside a ``with`` block.

    Yields:
        The list the events are appended to, in the order they happen.
    """
    events: list[Event] = []
    lock = threading.Lock()

    def hook(event: Event) -> None:
        with lock:
            events.append(event)

    add_hook(hook)
    try:
        yield events
    finally:
        remove_hook(hook)


class _Faults:
    """Draw each call's fate from one seeded generator: fail, slow, or fine."""

    def __init__(self, failure_rate: float, slow_rate: float, seed: int | None) -> None:
        self.failure_rate = failure_rate
        self.slow_rate = slow_rate
        self.random = random.Random(seed)  # noqa: S311 - fault injection, not crypto
        self.lock = threading.Lock()

    def draw(self) -> tuple[bool, bool]:
        """Return (fails, slow) for the next call."""
        with self.lock:
            fails = self.random.random() < self.failure_rate
            slow = self.random.random() < self.slow_rate
        return fails, slow


def _rate(value: object, param: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        msg = f"{param} must be a number between 0 and 1, got {value!r}"
        raise TypeError(msg)
    if not (math.isfinite(value) and 0 <= value <= 1):
        msg = f"{param} must be between 0 and 1, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _error_factory(error: object) -> Callable[[], BaseException]:
    if isinstance(error, type) and issubclass(error, BaseException):
        return lambda: error("fluxus.testing.flaky injected this failure")
    if isinstance(error, BaseException):
        return lambda: error
    if callable(error):
        return cast("Callable[[], BaseException]", error)
    msg = (
        "error must be an exception type, an exception, or a callable "
        f"returning one, got {error!r}"
    )
    raise TypeError(msg)


def flaky(
    failure_rate: float = 0.3,
    slow_rate: float = 0.2,
    delay: float = 2.0,
    seed: int | None = None,
    error: ErrorSpec = ConnectionError,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Return a decorator that makes a function fail and stall at random.

    Each call of the decorated function (sync or ``async def``) draws its
    fate: with probability *failure_rate* it raises *error* without running
    the function; independently, with probability *slow_rate* it first
    sleeps *delay* seconds. With a *seed*, the sequence of fates is the same
    on every run (calls made from several threads at once take the draws in
    the order they reach them).

    The delay is a real sleep (``time.sleep``, or the running library's
    sleep: asyncio's or trio's), also in testing mode, so that
    :func:`fluxus.timeout` can be exercised against it; use a small
    *delay*, or ``slow_rate=0``, in fast suites.

    Args:
        failure_rate: The probability, from 0 to 1, that a call fails.
        slow_rate: The probability, from 0 to 1, that a call is slow.
        delay: How long a slow call sleeps, in seconds or a timedelta.
        seed: Seed of the generator; ``None`` draws a different run each time.
        error: What a failing call raises: an exception type (built with a
            message), an exception instance, or a callable returning one.

    Returns:
        A decorator; every function it decorates has its own generator.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a rate is outside 0..1 or *delay* is negative.
    """
    if callable(failure_rate):  # @flaky without parentheses
        msg = (
            f"failure_rate must be a number between 0 and 1, got {failure_rate!r}: "
            "use @fluxus.testing.flaky() with parentheses"
        )
        raise TypeError(msg)
    failure_rate = _rate(failure_rate, "failure_rate")
    slow_rate = _rate(slow_rate, "slow_rate")
    seconds = to_seconds(delay, "delay")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        msg = f"seed must be an int or None, got {seed!r}"
        raise TypeError(msg)
    make_error = _error_factory(error)

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        faults = _Faults(failure_rate, slow_rate, seed)
        if inspect.iscoroutinefunction(func):
            # An async def stays one: T is the coroutine's awaitable result.
            return cast(
                "Callable[P, T]", _flaky_async(func, faults, seconds, make_error)
            )
        return _flaky_sync(func, faults, seconds, make_error)

    return decorate


def _flaky_sync(
    func: Callable[P, T],
    faults: _Faults,
    delay: float,
    make_error: Callable[[], BaseException],
) -> Callable[P, T]:
    @functools.wraps(func)
    def flaky_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        fails, slow = faults.draw()
        if slow:
            time.sleep(delay)
        if fails:
            raise make_error()
        return func(*args, **kwargs)

    return flaky_wrapper


def _flaky_async(
    func: Callable[P, Awaitable[T]],
    faults: _Faults,
    delay: float,
    make_error: Callable[[], BaseException],
) -> Callable[P, Awaitable[T]]:
    @functools.wraps(func)
    async def flaky_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        fails, slow = faults.draw()
        if slow:
            await _aio.sleep(delay)
        if fails:
            raise make_error()
        return await func(*args, **kwargs)

    return flaky_wrapper
