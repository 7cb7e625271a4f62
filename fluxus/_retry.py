"""``@fluxus.retry``: try again, over tenacity.

The happy path is one ``try`` around the call (and, with ``on_result``, one
call of the predicate). Only after a failed attempt does fluxus build
tenacity's per-call state (:class:`tenacity.RetryCallState`), which
tenacity's stop and wait strategies read. :meth:`Retry._schedule` makes the
one decision that follows a failed attempt, in this order: attempts left
(tenacity's ``stop``), the wait (the ``backoff``, asked only for a wait that
can happen), the enclosing deadline, the budget; then it reports the retry
or the give-up. Three small drivers carry its answers out: one sync and one
async for decorated functions, and :class:`Attempts` for the block form,
sync and async, so a behaviour is decided in one place for all of them.

A failed attempt is an exception that ``on`` and ``should_retry`` accept,
or a returned value that ``on_result`` rejects. Giving up re-raises the
last exception as itself (with a PEP 678 note) or returns the last value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._budget import RetryBudget
from ._config import CONFIG
from ._core import RETRY, Policy, block_name, qualified_name, type_name
from ._deadline import DEADLINE, effective_wait, remaining, wait_async, wait_sync
from ._validate import check_callable, not_bare, positive_int, raise_replacement
from .backoff import takes_error
from .exceptions import REJECTIONS, DeadlineExceeded
from .instrumentation._events import RetriesExhausted, RetryScheduled
from .instrumentation._hooks import emit
from .instrumentation._observe import (
    WATCH,
    Observe,
    attempts_async,
    attempts_sync,
    block_ended,
    block_started,
    watch_for,
)

if TYPE_CHECKING:
    from types import FrameType

    from .backoff import Backoff, ErrorBackoff

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]

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


class Retry(Policy):
    """Call again when the call fails; see :func:`retry`.

    Decorate functions with it, or retry a block with :meth:`attempts`; both
    share the policy's budget, events and :attr:`stats`.
    """

    _kind: ClassVar[str] = "retry"
    _rank: ClassVar[int] = RETRY
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Backoff | ErrorBackoff | wait_base | None = None,
        on: ExceptionTypes = Exception,
        should_retry: Callable[[Exception], bool] | None = None,
        on_result: Callable[[Any], bool] | None = None,
        on_exhausted: Callable[[Exception], BaseException | None] | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self._attempts = _check_attempts(attempts)
        check_callable(should_retry, "should_retry")
        check_callable(on_result, "on_result")
        check_callable(on_exhausted, "on_exhausted")
        if budget is not None and not isinstance(budget, RetryBudget):
            msg = f"budget must be a fluxus.RetryBudget or None, got {budget!r}"
            raise TypeError(msg)
        self.backoff = backoff
        self.budget = budget
        self._on = _to_exception_types(on)
        self._should_retry = should_retry
        self._on_result = on_result
        self._on_exhausted = on_exhausted
        # Only tenacity's stop and wait are used, in fluxus's order (the wait
        # is computed only when an attempt is left); the Retrying object is
        # what RetryCallState and tenacity's strategies expect to find.
        self._retrying = tenacity.Retrying(
            stop=_StopAfterAttempts(attempts),
            wait=_to_wait(backoff),
            retry=tenacity.retry_always,
        )

    @property
    def max_attempts(self) -> int:
        """The total number of calls, the first included."""
        return self._attempts

    def attempts(self) -> Attempts:
        """Return the attempts of a block to retry, sharing this policy's decisions.

        ::

            for attempt in policy.attempts():
                with attempt:
                    ...

        ``async for`` works the same in async code. Failures are retried as
        for a decorated function (``on``, ``should_retry``, ``backoff``, the
        budget, the deadline, the events and :attr:`stats` alike); when
        retrying stops, the last failure leaves the ``with`` as itself.
        ``on_result`` does not apply: a block returns no value.
        """
        return Attempts(self)

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

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        if observe is None:
            # The plain wrapper, run by the observers: each attempt too.
            func = attempts_sync(func)
        retryable = self._retryable
        on_result = self._on_result
        again = self._again_sync
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)
        deadline, expired = DEADLINE.get, self._refuse_when_expired

        def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if deadline() is not None:
                expired()
            if budget is not None:
                budget.record_attempt()
            error: Exception | None  # an annotation: no run-time cost
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                error, result = exc, None
            else:
                if on_result is None or not on_result(result):
                    return result
                error = None
            # Outside the except block: later errors do not chain to this one.
            return again(func, function, args, kwargs, error=error, result=result)

        return retry_wrapper

    def _again_sync(
        self,
        func: Callable[..., Any],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        error: Exception | None,
        result: Any,
    ) -> Any:
        state, on_result = self._state(), self._on_result
        while True:
            delay = self._schedule(state, error, result, function)
            if delay is None:
                break
            wait_sync(delay)
            if self._late(state, error, function):
                break
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    self._refuse(state, exc, function)
                    raise
                error = exc
                continue
            if on_result is None or not on_result(result):
                return result
            error = None
        if error is None:
            return result
        raise error

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        if observe is None:
            func = attempts_async(func)
        retryable = self._retryable
        on_result = self._on_result
        again = self._again_async
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)
        deadline, expired = DEADLINE.get, self._refuse_when_expired

        async def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if deadline() is not None:
                expired()
            if budget is not None:
                budget.record_attempt()
            error: Exception | None
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                error, result = exc, None
            else:
                if on_result is None or not on_result(result):
                    return result
                error = None
            return await again(func, function, args, kwargs, error=error, result=result)

        return retry_wrapper

    async def _again_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        error: Exception | None,
        result: Any,
    ) -> Any:
        state, on_result = self._state(), self._on_result
        while True:
            delay = self._schedule(state, error, result, function)
            if delay is None:
                break
            await wait_async(delay)
            if self._late(state, error, function):
                break
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    self._refuse(state, exc, function)
                    raise
                error = exc
                continue
            if on_result is None or not on_result(result):
                return result
            error = None
        if error is None:
            return result
        raise error


class Attempt:
    """One attempt of a retried block; ``with attempt:`` goes around the body.

    Attributes:
        number: 1 for the first attempt, 2 for the first retry, and so on.
    """

    __slots__ = ("_attempts", "_observed", "number")

    def __init__(self, attempts: Attempts, number: int) -> None:
        self._attempts = attempts
        self.number: int = number
        self._observed: Any = None

    def __repr__(self) -> str:
        return f"<fluxus.retry attempt {self.number}>"

    def __enter__(self) -> Self:
        attempts = self._attempts
        if attempts._observed is not None and WATCH.attempts:  # noqa: SLF001
            self._observed = block_started(
                attempts._policy,  # noqa: SLF001
                attempts._function,  # noqa: SLF001
                self.number,
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Swallow a failure that will be retried; let anything else through."""
        attempts = self._attempts
        if self._observed is not None:
            block_ended(self._observed, error)
        if error is None:
            if attempts._observed is not None:  # noqa: SLF001
                attempts._end(None)  # noqa: SLF001
            return False
        # The frame that runs the block: events name it as they name a
        # decorated function. Looked up only after a failure.
        block = sys._getframe(1)  # noqa: SLF001 - one frame up, no walk
        return attempts._failed(error, block)  # noqa: SLF001


class Attempts:
    """The attempts of one run of a retried block, from :meth:`Retry.attempts`.

    Iterate over it with ``for`` in sync code and ``async for`` in async
    code, and put ``with attempt:`` around the body. A failure that will be
    retried is swallowed by the ``with`` and the loop goes on after the
    backoff wait; a success ends the loop; giving up lets the last failure
    out of the ``with``, as itself.
    """

    __slots__ = (
        "_delay",
        "_error",
        "_function",
        "_number",
        "_observed",
        "_policy",
        "_state",
    )

    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._number = 0
        self._delay: float | None = None
        #: The observers told about this run, while it runs (see :meth:`_end`).
        self._observed: Any = None
        # Set at the first failure, with the block's name and tenacity's state.
        self._function = ""
        self._state: tenacity.RetryCallState | None = None
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"<fluxus.retry attempts of {self._policy.name!r} at {self._number}>"

    def __iter__(self) -> Attempts:
        return self

    def __next__(self) -> Attempt:
        if self._number:
            if self._delay is None:
                raise StopIteration
            wait_sync(self._delay)
        elif WATCH.observers:
            self._observe(sys._getframe(1))  # noqa: SLF001 - the loop's frame
        return self._next()

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if self._number:
            if self._delay is None:
                raise StopAsyncIteration
            await wait_async(self._delay)
        elif WATCH.observers:
            self._observe(sys._getframe(1))  # noqa: SLF001 - the loop's frame
        return self._next()

    def _observe(self, block: FrameType) -> None:
        """Tell the observers the run starts, as a decorated call's observe does."""
        self._function = block_name(block)
        self._observed = block_started(self._policy, self._function) or []

    def _end(self, error: BaseException | None) -> None:
        """Tell the observers the run ended (once), with the error leaving it."""
        observed, self._observed = self._observed, None
        block_ended(observed, error)

    def _next(self) -> Attempt:
        policy = self._policy
        if not self._number:
            next(policy._counters.calls)  # noqa: SLF001
            if DEADLINE.get() is not None:
                try:
                    policy._refuse_when_expired()  # noqa: SLF001
                except DeadlineExceeded as exc:
                    self._end(exc)
                    raise
            if policy.budget is not None:
                policy.budget.record_attempt()
        elif policy._late(self._state, self._error, self._function):  # type: ignore[arg-type]  # noqa: SLF001
            self._delay = None
            self._end(self._error)
            raise self._error  # type: ignore[misc]
        self._delay = None
        self._number += 1
        return Attempt(self, self._number)

    def _failed(self, error: BaseException, block: FrameType) -> bool:
        """Decide after attempt :attr:`_number` raised *error*: retry it or not."""
        try:
            retried = self._decide(error, block)
        except BaseException as exc:  # on_exhausted's replacement, a bad wait
            self._end(exc)
            raise
        if not retried:
            self._end(error)
        return retried

    def _decide(self, error: BaseException, block: FrameType) -> bool:
        policy = self._policy
        if not isinstance(error, Exception):
            return False
        if self._state is None:
            self._state = policy._state()  # noqa: SLF001
            if not self._function:
                self._function = block_name(block)
        if not policy._retryable(error):  # noqa: SLF001
            if self._number > 1:
                policy._refuse(self._state, error, self._function)  # noqa: SLF001
            else:
                next(policy._counters.failures)  # noqa: SLF001
            return False
        self._delay = policy._schedule(self._state, error, None, self._function)  # noqa: SLF001
        self._error = error
        return self._delay is not None


def retry(
    attempts: int = 3,
    *,
    backoff: Backoff | ErrorBackoff | wait_base | None = None,
    on: ExceptionTypes = Exception,
    should_retry: Callable[[Exception], bool] | None = None,
    on_result: Callable[[Any], bool] | None = None,
    on_exhausted: Callable[[Exception], BaseException | None] | None = None,
    budget: RetryBudget | None = None,
    name: str | None = None,
) -> Retry:
    r"""Return a policy that calls a failing function again.

    Args:
        attempts: The total number of calls, the first included.
        backoff: How long to wait between calls: ``None`` (no wait), a
            callable ``backoff(retry_index) -> seconds`` (``retry_index`` is
            0 before the second call) or ``backoff(retry_index, error)``
            (two positional parameters; ``error`` is ``None`` after a
            rejected result), a :mod:`fluxus.backoff` strategy such as
            :func:`fluxus.backoff.retry_after`, or a tenacity ``wait_*``
            object. It is called only for waits that happen.
        on: The exception type(s) that are retried.
        should_retry: ``should_retry(exc) -> bool`` narrows *on* further.
        on_result: ``on_result(value) -> bool``: a call that returns a value
            for which it is true is retried like a failure; when attempts
            run out, the last value is returned.
        on_exhausted: Called with the last exception whenever fluxus gives
            up on one (attempts spent, deadline, budget, or ``on`` or
            *should_retry* refusing after a retry); an exception it returns
            is raised ``from`` the last one.
        budget: A :class:`~fluxus.RetryBudget` shared with other functions.
        name: The name in events; by default the first decorated function's.

    Returns:
        A :class:`Retry` policy; decorate functions with it, or retry a block
        with :meth:`Retry.attempts`.

    Raises:
        TypeError: If a parameter has the wrong type (``@fluxus.retry``
            without parentheses included).
        ValueError: If *attempts* is below 1 or *on* names only rejections.

    fluxus's own rejections (:func:`~fluxus.is_rejection`) and
    ``BaseException``\\ s such as cancellation are never retried. When fluxus
    gives up on an exception after retrying, it re-raises it as itself with
    a note saying how many attempts were made and why it stopped, and emits
    :class:`~fluxus.instrumentation.RetriesExhausted`. A wait the backoff
    returns that is negative, NaN or not a number raises a
    :class:`ValueError` or :class:`TypeError` naming ``backoff``. Waits
    never run past an enclosing :func:`fluxus.timeout` deadline.
    """
    return Retry(
        attempts,
        backoff=backoff,
        on=on,
        should_retry=should_retry,
        on_result=on_result,
        on_exhausted=on_exhausted,
        budget=budget,
        name=name,
    )
