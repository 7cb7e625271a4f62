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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import tenacity

from fluxus._budget import RetryBudget
from fluxus._core import RETRY, factory_of
from fluxus._validate import check_callable

from ._block import Attempts
from ._drivers import _Drivers
from ._options import (
    ExceptionTypes,
    _check_attempts,
    _StopAfterAttempts,
    _to_exception_types,
    _to_wait,
)

if TYPE_CHECKING:
    from tenacity.wait import wait_base

    from fluxus.backoff import Backoff, ErrorBackoff


class Retry(_Drivers):
    """Call again when the call fails; see :func:`retry`.

    Decorate functions with it, or retry a block with :meth:`attempts`; both
    share the policy's budget, events and :attr:`stats`.
    """

    _kind: ClassVar[str] = "retry"
    _rank: ClassVar[int] = RETRY

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


@factory_of(Retry)
def retry() -> None:
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
