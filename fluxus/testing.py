"""Helpers for the test suites of code that uses fluxus.

::

    with fluxus.testing.testing():          # backoff waits are instant
        with fluxus.testing.capture_events() as events:
            client.fetch()
    assert [e.kind for e in events] == ["retry_scheduled"]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from ._config import CONFIG, TestingMode
from .instrumentation._events import Event
from .instrumentation._hooks import add_hook, remove_hook

__all__ = ["capture_events", "is_testing", "set_testing", "testing"]


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
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            msg = f"attempts must be an int or None, got {attempts!r}"
            raise TypeError(msg)
        if attempts < 1:
            msg = f"attempts must be >= 1, got {attempts}"
            raise ValueError(msg)
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
