"""The decision after a failed attempt, shared by every driver."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import tenacity

from fluxus._budget import RetryBudget
from fluxus._core import Policy, type_name
from fluxus._deadline import effective_wait, remaining
from fluxus._validate import raise_replacement
from fluxus.exceptions import REJECTIONS, DeadlineExceeded
from fluxus.instrumentation._events import RetriesExhausted, RetryScheduled
from fluxus.instrumentation._hooks import emit

if TYPE_CHECKING:
    from tenacity.wait import wait_base

    from fluxus.backoff import Backoff, ErrorBackoff


_NOTE = "fluxus.retry gave up after {attempts} attempt{plural}: {reason}"


class _Note(str):  # noqa: SLOT000 - the owner tag lives in the instance dict
    """A give-up note, tagged with (the id of) the policy that wrote it."""

    owner: int


def _add_note(error: Exception, text: str, owner: object) -> None:
    """Add *text* to *error*, replacing the note *owner* left there before.

    An exception object raised again and again (a module-level constant, a
    cached error) would otherwise carry one more note per call; the notes of
    other retry policies (nested ones) stay.
    """
    notes = getattr(error, "__notes__", None)
    if notes:
        notes[:] = [n for n in notes if getattr(n, "owner", None) != id(owner)]
    note = _Note(text)
    note.owner = id(owner)
    error.add_note(note)


def _checked_delay(value: object, error: Exception | None) -> float:
    """Return *value*, the wait a backoff returned, as seconds, or raise."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, int | float) or isinstance(value, bool):
        msg = f"backoff must return seconds as a number, got {value!r}"
        raise TypeError(msg) from error
    if math.isnan(value) or value < 0:
        msg = f"backoff must return seconds >= 0, got {value!r}"
        raise ValueError(msg) from error
    return float(value)


class _Schedule(Policy):
    """Decide what follows a failed attempt: a wait, or giving up."""

    # Set by Retry.__init__.
    backoff: Backoff | ErrorBackoff | wait_base | None
    budget: RetryBudget | None
    _attempts: int
    _on: tuple[type[Exception], ...]
    _should_retry: Callable[[Exception], bool] | None
    _on_result: Callable[[Any], bool] | None
    _on_exhausted: Callable[[Exception], BaseException | None] | None
    _retrying: tenacity.Retrying

    def _retryable(self, exc: Exception) -> bool:
        if not isinstance(exc, self._on) or isinstance(exc, REJECTIONS):
            return False
        return self._should_retry is None or bool(self._should_retry(exc))

    def _refusal(self, exc: Exception) -> str:
        """Say why *exc*, which :meth:`_retryable` refused, is not retried."""
        kind = type_name(type(exc))
        if isinstance(exc, REJECTIONS):
            return f"{kind} is a fluxus rejection, never retried"
        if not isinstance(exc, self._on):
            return f"{kind} is not in on"
        return f"should_retry returned False for {kind}"

    def _state(self) -> tenacity.RetryCallState:
        return tenacity.RetryCallState(self._retrying, None, (), {})

    def _schedule(
        self,
        state: tenacity.RetryCallState,
        error: Exception | None,
        result: object,
        function: str,
    ) -> float | None:
        """Decide after a failed attempt: return the wait, or ``None`` to give up.

        Args:
            state: The call's tenacity state, at the attempt that failed.
            error: The exception the attempt raised, or ``None`` when
                ``on_result`` rejected the value it returned.
            result: That value (ignored when *error* is given).
            function: The protected function's name, for the events.

        Raises:
            Exception: What ``on_exhausted`` returns on giving up; a
                :class:`TypeError` or :class:`ValueError` for a bad wait.
        """
        if error is None:
            state.set_result(result)
        else:
            state.set_exception((type(error), error, error.__traceback__))
        attempts = state.attempt_number
        retrying = self._retrying
        if retrying.stop(state):
            self._give_up(error, attempts, function, "no attempts left")
            return None
        delay = _checked_delay(retrying.wait(state), error)
        left = remaining()
        if left is not None and effective_wait(delay) >= left:
            reason = (
                f"the next attempt would start past the deadline "
                f"({left:.3f}s left, backoff {delay:.3f}s)"
            )
            self._give_up(error, attempts, function, reason)
            return None
        if self.budget is not None and not self.budget.try_spend():
            reason = "the retry budget is spent"
            self._give_up(error, attempts, function, reason)
            return None
        next(self._counters.retries)
        emit(
            RetryScheduled(
                policy=self.name,
                function=function,
                attempt=attempts,
                delay=delay,
                error_type=None if error is None else type_name(type(error)),
                error_message=None if error is None else str(error),
            )
        )
        state.idle_for += delay
        state.prepare_for_next_attempt()
        return delay

    def _late(
        self, state: tenacity.RetryCallState, error: Exception | None, function: str
    ) -> bool:
        """Give up if the deadline passed during the wait (a late wake-up)."""
        left = remaining()
        if left is None or left > 0:
            return False
        reason = "the deadline passed during the backoff wait"
        self._give_up(error, state.attempt_number - 1, function, reason)
        return True

    def _refuse(
        self, state: tenacity.RetryCallState, error: Exception, function: str
    ) -> None:
        """Give up on *error*, which is not retried, met after a retry."""
        reason = self._refusal(error)
        self._give_up(error, state.attempt_number, function, reason)

    def _refuse_when_expired(self) -> None:
        """Start no first attempt once the enclosing deadline has passed."""
        left = remaining()
        if left is not None and left <= 0:
            error = DeadlineExceeded(self.name, 0.0)
            error.add_note("fluxus.retry started no attempt: the deadline had passed")
            raise error

    def _give_up(
        self, error: Exception | None, attempts: int, function: str, reason: str
    ) -> None:
        """Report giving up; the caller then raises *error* or returns the value.

        Raises:
            Exception: What ``on_exhausted`` returns for *error*.
        """
        next(self._counters.failures)
        if error is None:
            reason = f"on_result rejected the result; {reason}"
        else:
            plural = "" if attempts == 1 else "s"
            note = _NOTE.format(attempts=attempts, plural=plural, reason=reason)
            _add_note(error, note, self)
        emit(
            RetriesExhausted(
                policy=self.name,
                function=function,
                attempts=attempts,
                reason=reason,
                error_type=None if error is None else type_name(type(error)),
                error_message=None if error is None else str(error),
            )
        )
        if error is not None:
            raise_replacement(self._on_exhausted, error, "on_exhausted")
