"""A retry's options, checked when it is built: backoff, ``on``, attempts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from fluxus._config import CONFIG
from fluxus._validate import not_bare, positive_int
from fluxus.backoff import takes_error
from fluxus.exceptions import REJECTIONS

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]


class _IndexWait(wait_base):
    """Adapt ``backoff(retry_index)`` or ``backoff(retry_index, error)``."""

    def __init__(self, backoff: Callable[..., Any]) -> None:
        self.backoff = backoff
        self.with_error = takes_error(backoff)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        index = retry_state.attempt_number - 1
        if not self.with_error:
            return self.backoff(index)  # type: ignore[no-any-return]
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return self.backoff(index, error)  # type: ignore[no-any-return]


class _StopAfterAttempts(stop_base):
    """Stop after *attempts* calls in all, or fewer under the testing cap."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.attempt_number >= CONFIG.testing.cap_attempts(self.attempts)


def _to_wait(backoff: object) -> wait_base:
    if backoff is None:
        return tenacity.wait_none()
    if isinstance(backoff, wait_base):
        return backoff
    if not callable(backoff):
        msg = (
            "backoff must be None, a callable backoff(retry_index) -> seconds, "
            f"a fluxus.backoff strategy or a tenacity wait, got {backoff!r}"
        )
        raise TypeError(msg)
    return _IndexWait(backoff)


def _to_exception_types(on: object) -> tuple[type[Exception], ...]:
    types = on if isinstance(on, tuple) else (on,)
    if not types:
        msg = "on must name at least one exception type, got ()"
        raise ValueError(msg)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            msg = (
                "on must be an Exception subclass or a tuple of them "
                f"(fluxus never retries BaseExceptions), got {kind!r}"
            )
            raise TypeError(msg)
    if all(issubclass(kind, REJECTIONS) for kind in types):
        msg = (
            "on must name an exception type that can be retried, got "
            f"{on!r}: fluxus's own rejections (fluxus.is_rejection) are never "
            "retried"
        )
        raise ValueError(msg)
    return types


def _check_attempts(attempts: object) -> int:
    not_bare(attempts, "attempts", "an int", "@fluxus.retry()")
    return positive_int(attempts, "attempts", what="the total number of calls")
