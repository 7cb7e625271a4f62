"""The decisions of a timeout, shared by every strategy's driver.

When a call may start and with which deadline, what budget it had, and the
one rule for a call that ENDED: a call that ends at or past its deadline
raises :class:`~fluxus.DeadlineExceeded`, whatever it returned, so no
strategy ever hands back a late result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from fluxus._deadline import DEADLINE
from fluxus._validate import raise_replacement
from fluxus.exceptions import DeadlineExceeded, ThreadsExhausted
from fluxus.instrumentation._events import TimedOut
from fluxus.instrumentation._hooks import emit

if TYPE_CHECKING:
    from fluxus._stats import Counters

LATE = "the deadline passed during the call"
PASSED = "the enclosing deadline had passed before the call started"


class Verdicts:
    """The decisions of one timeout policy; its drivers carry them out."""

    __slots__ = ("counters", "name_of", "on_timeout", "seconds")

    def __init__(
        self,
        seconds: float,
        on_timeout: Callable[[DeadlineExceeded], BaseException | None] | None,
        counters: Counters,
        name_of: Callable[[], str],
    ) -> None:
        self.seconds = seconds
        self.on_timeout = on_timeout
        self.counters = counters
        self.name_of = name_of

    def start(self, now: float, function: str, strategy: str) -> float:
        """Return the deadline of a call starting *now*, or raise if it passed.

        Nested deadlines only shrink: the enclosing deadline wins when it is
        sooner, and a call whose enclosing deadline has passed never starts.
        """
        deadline = now + self.seconds
        outer = DEADLINE.get()
        if outer is not None and outer < deadline:
            if outer <= now:
                self.fail(function, strategy, 0.0, PASSED)
            return outer
        return deadline

    def budget(self, now: float, deadline: float) -> float:
        """Return the budget the call had: ours, or what an outer deadline left."""
        if deadline < now + self.seconds:
            return deadline - now
        return self.seconds

    def settle(  # noqa: PLR0917 - the call's whole story, per call: no keywords
        self,
        function: str,
        strategy: str,
        now: float,
        deadline: float,
        ended: float,
        error: BaseException | None,
    ) -> None:
        """Raise the timeout if the call that started *now* ended too late.

        A call that ended at or past its deadline raises the timeout: a late
        result is dropped, and a late failure (say, a client's read timeout
        fed from :func:`fluxus.remaining`) becomes its cause, unless it
        already is an inner layer's :class:`~fluxus.DeadlineExceeded`.
        Returns when the call ended in time; the driver then returns its
        result or raises its error.
        """
        if ended >= deadline and not isinstance(error, DeadlineExceeded):
            self.late(function, strategy, now, deadline, error)

    def late(
        self,
        function: str,
        strategy: str,
        now: float,
        deadline: float,
        cause: BaseException | None,
    ) -> NoReturn:
        """Raise the timeout of a call that started *now* and ran out of time."""
        self.fail(function, strategy, self.budget(now, deadline), LATE, cause=cause)

    def exhausted(
        self, function: str, now: float, deadline: float, max_threads: int
    ) -> NoReturn:
        """Refuse a call: *max_threads* abandoned calls still hold their threads."""
        seconds = self.budget(now, deadline)
        self.fail(
            function,
            "thread",
            seconds,
            f"{max_threads} abandoned calls still hold their worker threads",
            error=ThreadsExhausted(self.name_of(), seconds, max_threads),
        )

    def fail(
        self,
        function: str,
        strategy: str,
        seconds: float,
        reason: str,
        *,
        cause: BaseException | None = None,
        error: FluxusTimeout | None = None,
    ) -> NoReturn:
        """Emit the event, then raise the timeout error (or its replacement)."""
        name = self.name_of()
        if error is None:
            error = DeadlineExceeded(name, seconds)
        error.__cause__ = cause
        error.__suppress_context__ = True
        if isinstance(error, DeadlineExceeded):
            next(self.counters.timeouts)
        else:  # a rejection: the call never started
            next(self.counters.rejections)
        emit(
            TimedOut(
                policy=name,
                function=function,
                seconds=seconds,
                strategy=strategy,
                reason=reason,
            )
        )
        if isinstance(error, DeadlineExceeded):
            raise_replacement(self.on_timeout, error, "on_timeout")
        raise error


FluxusTimeout = DeadlineExceeded | ThreadsExhausted
