"""How each strategy bounds a call: small drivers of :class:`Verdicts`.

Every driver publishes the deadline, runs the call its way and hands the
ending to :meth:`Verdicts.settle`, so the rule for a late call is written
once. What differs is only how the caller gets control back:

- ``"cooperative"`` (sync and async): it does not; the call runs to its end.
- ``"signal"``: ``SIGALRM`` raises :class:`_Alarm` inside the call, and keeps
  raising it every :data:`REARM_SECONDS` until the call ends, so a callee
  that catches the interrupt once (or in a retry loop) is interrupted
  again. The call runs in the caller's thread: one that swallows every
  interrupt and goes on forever cannot be walked away from.
- ``"thread"``: the call runs in the caller's worker thread
  (:mod:`._pool`); the caller waits until the deadline and walks away.
- ``async def``: :func:`asyncio.timeout` (or, under trio, a cancel scope)
  cancels the awaited work.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from contextvars import copy_context
from types import FrameType
from typing import TYPE_CHECKING, Any

from fluxus._aio import run_trio_within, running_trio
from fluxus._core import qualified_name
from fluxus._db import caller_in_transaction, warn_in_transaction
from fluxus._deadline import DEADLINE, monotonic
from fluxus.instrumentation._observe import Observe, watch_for

from ._pool import HUB, Bound

if TYPE_CHECKING:
    from ._verdicts import Verdicts

modules = sys.modules

#: How often ``"signal"`` interrupts a call again that caught the interrupt.
REARM_SECONDS = 0.01


def cooperative(
    verdicts: Verdicts,
    func: Callable[..., Any],
    observe: Observe | None,
) -> Callable[..., Any]:
    """Publish the deadline; a call that ends late raises once it ends."""
    function = qualified_name(func)
    watch = watch_for(observe)
    start, settle = verdicts.start, verdicts.settle
    calls = verdicts.counters.calls

    def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
        if watch.observers:
            return observe(args, kwargs)  # type: ignore[misc] # set when watched
        next(calls)
        now = monotonic()
        deadline = start(now, function, "cooperative")
        token = DEADLINE.set(deadline)
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            settle(function, "cooperative", now, deadline, monotonic(), exc)
            raise
        finally:
            DEADLINE.reset(token)
        settle(function, "cooperative", now, deadline, monotonic(), None)
        return result

    return timeout_wrapper


class _Alarm(BaseException):
    """Raised by a signal timeout's ``SIGALRM`` handler inside the callee.

    A ``BaseException``, so that the callee's ``except Exception`` blocks do
    not swallow it.
    """

    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner


def signal_alarm(
    verdicts: Verdicts,
    func: Callable[..., Any],
    observe: Observe | None,
) -> Callable[..., Any]:
    """Interrupt the call with ``SIGALRM`` at the deadline (main thread only)."""
    function = qualified_name(func)
    watch = watch_for(observe)
    start, settle, late = verdicts.start, verdicts.settle, verdicts.late
    calls = verdicts.counters.calls

    def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
        if watch.observers:
            return observe(args, kwargs)  # type: ignore[misc] # set when watched
        next(calls)
        if threading.current_thread() is not threading.main_thread():
            msg = (
                f"fluxus.timeout {verdicts.name_of()!r} uses strategy='signal', which "
                "works only in the main thread (SIGALRM); "
                f"{function} was called in {threading.current_thread().name!r}. "
                "Use strategy='thread' (the default) instead"
            )
            raise ValueError(msg)
        now = monotonic()
        deadline = start(now, function, "signal")
        owner = object()
        armed = [True]

        def on_alarm(_signum: int, _frame: FrameType | None) -> None:
            if armed:
                raise _Alarm(owner)

        token = DEADLINE.set(deadline)
        previous_handler = signal.signal(signal.SIGALRM, on_alarm)
        previous_timer = signal.getitimer(signal.ITIMER_REAL)
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, deadline - now, REARM_SECONDS)
                result = func(*args, **kwargs)
            finally:
                armed.clear()  # before the timer: an alarm now does nothing
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Alarm as alarm:
            if alarm.owner is not owner:
                raise
            late(function, "signal", now, deadline, None)
        except Exception as exc:
            settle(function, "signal", now, deadline, monotonic(), exc)
            raise
        finally:
            DEADLINE.reset(token)
            signal.signal(signal.SIGALRM, previous_handler)
            _rearm(previous_timer, monotonic() - now)
        settle(function, "signal", now, deadline, monotonic(), None)
        return result

    return timeout_wrapper


def _rearm(previous: tuple[float, float], elapsed: float) -> None:
    """Restore the interval timer an enclosing signal timeout had set."""
    delay, interval = previous
    if delay > 0:
        # A timer that would have fired already fires now.
        signal.setitimer(signal.ITIMER_REAL, max(delay - elapsed, 1e-6), interval)


def runs_inline(func: Callable[..., Any]) -> bool:  # noqa: ARG001 - the hook's shape
    """Tell whether a ``"thread"`` call of *func* must stay in the calling thread.

    The one place where the thread strategy decides not to hand a call over
    (it then runs as ``"cooperative"`` does, its deadline published): when
    the calling thread is inside a database transaction, which a worker
    thread would leave (:func:`fluxus._db.caller_in_transaction`).
    """
    return caller_in_transaction()


def thread(
    verdicts: Verdicts,
    bound: Bound,
    func: Callable[..., Any],
    observe: Observe | None,
) -> Callable[..., Any]:
    """Run the call in the caller's worker thread; walk away at the deadline."""
    function = qualified_name(func)
    watch = watch_for(observe)
    start, settle, late = verdicts.start, verdicts.settle, verdicts.late
    calls = verdicts.counters.calls
    inline = cooperative(verdicts, func, None)
    take, abandon = HUB.take, HUB.abandon

    def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
        if watch.observers:
            return observe(args, kwargs)  # type: ignore[misc] # set when watched
        if runs_inline(func):
            warn_in_transaction(verdicts.name_of(), function)  # once per function
            return inline(*args, **kwargs)
        next(calls)
        now = monotonic()
        deadline = start(now, function, "thread")
        if bound.abandoned >= bound.max_threads:
            verdicts.exhausted(function, now, deadline, bound.max_threads)
        worker = take()
        # The caller's context variables (request context, structlog's
        # contextvars, the enclosing deadline) are visible in the callee.
        ticket = worker.start(func, args, kwargs, copy_context(), deadline)
        try:
            done = worker.wait(ticket, now, deadline)
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt, an enclosing
            # signal timeout): walk away, or drop the outcome if it is done.
            if not abandon(worker, ticket, bound):
                worker.outcome()
            raise
        if not done and abandon(worker, ticket, bound):
            late(function, "thread", now, deadline, None)
        # Done, or done as we gave up (its signal is dropped by the next wait).
        result, error, ended = worker.outcome()
        settle(function, "thread", now, deadline, ended, error)
        if error is not None:
            try:
                raise error
            finally:
                del error
        return result

    return timeout_wrapper


# -- async drivers -------------------------------------------------------------


def cancelling(
    verdicts: Verdicts,
    func: Callable[..., Awaitable[Any]],
    observe: Observe | None,
) -> Callable[..., Awaitable[Any]]:
    """Cancel the awaited call at the deadline.

    Under asyncio with :func:`asyncio.timeout`; under trio with a
    :func:`trio.move_on_after` cancel scope (:mod:`fluxus._aio`). Either way
    a call cut short raises :class:`~fluxus.DeadlineExceeded`.
    """
    function = qualified_name(func)
    watch = watch_for(observe)
    seconds = verdicts.seconds
    start, late = verdicts.start, verdicts.late
    calls = verdicts.counters.calls

    async def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
        if watch.observers:
            return await observe(args, kwargs)  # type: ignore[misc] # set when watched
        next(calls)
        if "trio" in modules and running_trio():
            return await trio_wrapper(args, kwargs)
        now = monotonic()
        deadline = now + seconds
        outer = DEADLINE.get()
        if outer is not None and outer < deadline:
            # Shrunk by an enclosing deadline: the rare, slower path.
            deadline = start(now, function, "asyncio")
        token = DEADLINE.set(deadline)
        scope = asyncio.timeout(deadline - now)
        try:
            async with scope:
                return await func(*args, **kwargs)
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the function's own TimeoutError
            late(function, "asyncio", now, deadline, exc.__cause__ or exc)
        finally:
            DEADLINE.reset(token)

    async def trio_wrapper(args: Any, kwargs: Any) -> Any:
        """The same bound under trio: a cancel scope instead of asyncio.timeout."""
        now = monotonic()
        deadline = start(now, function, "trio")
        token = DEADLINE.set(deadline)
        try:
            cancelled, result = await run_trio_within(
                deadline - now, func, args, kwargs
            )
        finally:
            DEADLINE.reset(token)
        if cancelled is not None:
            late(function, "trio", now, deadline, cancelled)
        return result

    return timeout_wrapper


def cooperative_async(
    verdicts: Verdicts,
    func: Callable[..., Awaitable[Any]],
    observe: Observe | None,
) -> Callable[..., Awaitable[Any]]:
    """Publish the deadline; an awaited call that ends late raises once it ends."""
    function = qualified_name(func)
    watch = watch_for(observe)
    start, settle = verdicts.start, verdicts.settle
    calls = verdicts.counters.calls

    async def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
        if watch.observers:
            return await observe(args, kwargs)  # type: ignore[misc] # set when watched
        next(calls)
        now = monotonic()
        deadline = start(now, function, "cooperative")
        token = DEADLINE.set(deadline)
        try:
            result = await func(*args, **kwargs)
        except Exception as exc:
            settle(function, "cooperative", now, deadline, monotonic(), exc)
            raise
        finally:
            DEADLINE.reset(token)
        settle(function, "cooperative", now, deadline, monotonic(), None)
        return result

    return timeout_wrapper
