"""A seeded fault injector for the reliability tests.

``flaky`` has the signature of ``fluxus.testing.flaky`` (failure rate, slow
rate, delay, seed, error) so the load tests can switch to it once it ships;
it also counts what it injected, which the tests compare with what the
policies report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fluxus.instrumentation import Event, get_hooks, set_hooks


class InjectedError(Exception):
    """The failure ``flaky`` raises by default."""


class Flaky:
    """Fail or slow down calls at random, reproducibly, and count them."""

    def __init__(
        self,
        failure_rate: float,
        slow_rate: float,
        delay: float,
        seed: int | None,
        error: type[Exception] | Callable[[], Exception],
    ) -> None:
        self.failure_rate = failure_rate
        self.slow_rate = slow_rate
        self.delay = delay
        self.error = error
        self._random = random.Random(seed)  # noqa: S311 - faults, not secrets
        self._lock = threading.Lock()
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _draw(self) -> tuple[bool, bool]:
        with self._lock:
            self.calls += 1
            slow = self._random.random() < self.slow_rate
            fail = self._random.random() < self.failure_rate
            self.slow += slow
            self.failures += fail
        return slow, fail

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_flaky(*args: Any, **kwargs: Any) -> Any:
                slow, fail = self._draw()
                await asyncio.sleep(self.delay if slow else 0)
                if fail:
                    raise self.error()
                return await func(*args, **kwargs)

            return async_flaky

        @functools.wraps(func)
        def sync_flaky(*args: Any, **kwargs: Any) -> Any:
            slow, fail = self._draw()
            if slow:
                time.sleep(self.delay)
            if fail:
                raise self.error()
            return func(*args, **kwargs)

        return sync_flaky


def flaky(
    failure_rate: float = 0.3,
    slow_rate: float = 0.2,
    delay: float = 2.0,
    seed: int | None = None,
    error: type[Exception] | Callable[[], Exception] = InjectedError,
) -> Flaky:
    """Return a decorator failing *failure_rate* and delaying *slow_rate* of calls."""
    return Flaky(failure_rate, slow_rate, delay, seed, error)


@contextlib.contextmanager
def only_captured_events() -> Iterator[list[Event]]:
    """Collect the events emitted inside, instead of logging them.

    Under load the default structlog hook would print thousands of lines.
    """
    captured: list[Event] = []
    previous = get_hooks()
    set_hooks([captured.append])
    try:
        yield captured
    finally:
        set_hooks(previous)
