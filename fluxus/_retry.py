"""``@fluxus.retry``: try again, over tenacity.

The happy path is one ``try`` around the call. Only after a failure does
fluxus build tenacity's per-call state (:class:`tenacity.RetryCallState`)
and ask tenacity's state machine (:meth:`tenacity.BaseRetrying.iter`, pure,
no I/O) what to do next; two small drivers, one sync and one async, carry
out its answers. The budget, the enclosing deadline and the events are
checked in :meth:`Retry._schedule`, which both drivers share.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._budget import RetryBudget
from ._config import CONFIG
from ._core import RETRY, Policy, qualified_name, type_name
from ._deadline import effective_wait, remaining, wait_async, wait_sync
from ._validate import check_callable, positive_int, raise_replacement
from .exceptions import REJECTIONS
from .instrumentation._events import RetriesExhausted, RetryScheduled
from .instrumentation._hooks import emit
from .instrumentation._observe import (
    Observe,
    attempts_async,
    attempts_sync,
    watch_for,
)

if TYPE_CHECKING:
    from .backoff import Backoff

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]


class _GiveUp:
    """What tenacity's ``retry_error_callback`` answers once attempts run out."""


_GIVE_UP = _GiveUp()


def _give_up_marker(_state: tenacity.RetryCallState) -> _GiveUp:
    return _GIVE_UP


def _checked_delay(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        msg = f"backoff must return seconds as a number, got {value!r}"
        raise TypeError(msg)
    if math.isnan(value) or value < 0:
        msg = f"backoff must return seconds >= 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


class _IndexWait(wait_base):
    """Adapt ``backoff(retry_index) -> seconds`` to a tenacity wait."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return _checked_delay(self.backoff(retry_state.attempt_number - 1))


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
    try:
        first = backoff(0)  # a bad strategy fails now, not mid-incident
    except Exception as exc:
        msg = (
            f"backoff must be a callable backoff(retry_index) -> seconds, but "
            f"backoff(0) raised {exc!r}"
        )
        raise TypeError(msg) from exc
    _checked_delay(first)
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
    return types


class Retry(Policy):
    """Call again when the call fails; see :func:`retry`."""

    _kind: ClassVar[str] = "retry"
    _rank: ClassVar[int] = RETRY
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Backoff | wait_base | None = None,
        on: ExceptionTypes = Exception,
        should_retry: Callable[[Exception], bool] | None = None,
        on_exhausted: Callable[[Exception], BaseException | None] | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        positive_int(attempts, "attempts", what="the total number of calls")
        check_callable(should_retry, "should_retry")
        check_callable(on_exhausted, "on_exhausted")
        if budget is not None and not isinstance(budget, RetryBudget):
            msg = f"budget must be a fluxus.RetryBudget or None, got {budget!r}"
            raise TypeError(msg)
        self.attempts = attempts
        self.backoff = backoff
        self.budget = budget
        self._on = _to_exception_types(on)
        self._should_retry = should_retry
        self._on_exhausted = on_exhausted
        self._retrying = tenacity.Retrying(
            stop=_StopAfterAttempts(attempts),
            wait=_to_wait(backoff),
            retry=tenacity.retry_always,
            retry_error_callback=_give_up_marker,
        )

    def _retryable(self, exc: Exception) -> bool:
        if not isinstance(exc, self._on) or isinstance(exc, REJECTIONS):
            return False
        return self._should_retry is None or bool(self._should_retry(exc))

    def _schedule(
        self, state: tenacity.RetryCallState, exc: Exception, function: str
    ) -> float:
        """Decide after a failed attempt: return the wait, or raise to give up."""
        state.set_exception((type(exc), exc, exc.__traceback__))
        action = self._retrying.iter(state)
        attempts = state.attempt_number
        if not isinstance(action, tenacity.DoSleep):  # it is _GIVE_UP
            self._give_up(exc, attempts, function, "no attempts left")
        delay = float(action)
        left = remaining()
        if left is not None and effective_wait(delay) >= left:
            self._give_up(
                exc,
                attempts,
                function,
                f"the next attempt would start past the deadline "
                f"({left:.3f}s left, backoff {delay:.3f}s)",
            )
        if self.budget is not None and not self.budget.try_spend():
            self._give_up(exc, attempts, function, "the retry budget is spent")
        next(self._counters.retries)
        emit(
            RetryScheduled(
                policy=self.name,
                function=function,
                attempt=attempts,
                delay=delay,
                error_type=type_name(type(exc)),
                error_message=str(exc),
            )
        )
        state.prepare_for_next_attempt()
        return delay

    def _check_deadline(
        self, state: tenacity.RetryCallState, exc: Exception, function: str
    ) -> None:
        """Give up if the deadline passed during the wait (a late wake-up)."""
        left = remaining()
        if left is not None and left <= 0:
            self._give_up(
                exc,
                state.attempt_number - 1,
                function,
                "the deadline passed during the backoff wait",
            )

    def _give_up(
        self, exc: Exception, attempts: int, function: str, reason: str
    ) -> NoReturn:
        plural = "" if attempts == 1 else "s"
        exc.add_note(f"fluxus.retry gave up after {attempts} attempt{plural}: {reason}")
        next(self._counters.failures)
        emit(
            RetriesExhausted(
                policy=self.name,
                function=function,
                attempts=attempts,
                reason=reason,
                error_type=type_name(type(exc)),
                error_message=str(exc),
            )
        )
        raise_replacement(self._on_exhausted, exc, "on_exhausted")
        raise exc

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        if observe is None:
            # The plain wrapper, run by the observers: each attempt too.
            func = attempts_sync(func)
        retryable = self._retryable
        again = self._again_sync
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)

        def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if budget is not None:
                budget.record_attempt()
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                first = exc
            return again(func, function, args, kwargs, first)

        return retry_wrapper

    def _again_sync(
        self,
        func: Callable[..., Any],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> Any:
        self._retrying.begin()
        state = tenacity.RetryCallState(self._retrying, func, args, kwargs)
        while True:
            wait_sync(self._schedule(state, exc, function))
            self._check_deadline(state, exc, function)
            try:
                return func(*args, **kwargs)
            except Exception as error:
                if not self._retryable(error):
                    next(self._counters.failures)
                    raise
                exc = error

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        if observe is None:
            func = attempts_async(func)
        retryable = self._retryable
        again = self._again_async
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)

        async def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if budget is not None:
                budget.record_attempt()
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                first = exc
            return await again(func, function, args, kwargs, first)

        return retry_wrapper

    async def _again_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> Any:
        self._retrying.begin()
        state = tenacity.RetryCallState(self._retrying, func, args, kwargs)
        while True:
            await wait_async(self._schedule(state, exc, function))
            self._check_deadline(state, exc, function)
            try:
                return await func(*args, **kwargs)
            except Exception as error:
                if not self._retryable(error):
                    next(self._counters.failures)
                    raise
                exc = error


def retry(
    attempts: int = 3,
    *,
    backoff: Backoff | wait_base | None = None,
    on: ExceptionTypes = Exception,
    should_retry: Callable[[Exception], bool] | None = None,
    on_exhausted: Callable[[Exception], BaseException | None] | None = None,
    budget: RetryBudget | None = None,
    name: str | None = None,
) -> Retry:
    r"""Return a policy that calls a failing function again.

    Args:
        attempts: The total number of calls, the first included.
        backoff: How long to wait between calls: ``None`` (no wait), a
            callable ``backoff(retry_index) -> seconds`` (``retry_index`` is
            0 before the second call), a :mod:`fluxus.backoff` strategy or a
            tenacity ``wait_*`` object.
        on: The exception type(s) that are retried.
        should_retry: ``should_retry(exc) -> bool`` narrows *on* further.
        on_exhausted: Called with the last exception once fluxus gives up; an
            exception it returns is raised ``from`` the last one.
        budget: A :class:`~fluxus.RetryBudget` shared with other functions.
        name: The name in events; by default the first decorated function's.

    Returns:
        A :class:`Retry` policy; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *attempts* is below 1 or *backoff* gives a negative wait.

    fluxus's own rejections (:func:`~fluxus.is_rejection`) and
    ``BaseException``\\ s such as
    cancellation are never retried. When fluxus gives up, the last exception
    is re-raised as itself with a note saying how many attempts were made.
    Waits never run past an enclosing :func:`fluxus.timeout` deadline.
    """
    return Retry(
        attempts,
        backoff=backoff,
        on=on,
        should_retry=should_retry,
        on_exhausted=on_exhausted,
        budget=budget,
        name=name,
    )
