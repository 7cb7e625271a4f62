"""``@fluxus.hedge``: when a call is slow, race a second one against it.

Tail latency often comes from one slow server, queue or packet, not from
the request: asking again elsewhere answers sooner. A hedged call starts the
function; if it has not finished after ``delay`` seconds, another call with
the same arguments starts, and so on up to ``max_hedges`` extra calls, each
``delay`` after the previous one. The first call to return wins; the others
are cancelled, and their cancellation is awaited, so no call outlives the
hedged one. A failure matching ``on`` starts the next hedge at once; any
other failure is raised at once and the others are cancelled. When every
call failed, the last failure is raised.

Hedges cost extra calls, so hedge only idempotent work, and pick ``delay``
near the latency percentile beyond which waiting is worse than asking again
(the p95 is the usual choice: about 5% extra calls). No hedge starts once an
enclosing :func:`fluxus.timeout` deadline has passed.

Only ``async def`` functions can be hedged: a sync call cannot be
cancelled. :meth:`Hedge._plan` decides when the next call starts; two
drivers apply it: one loop over :func:`asyncio.wait` under asyncio, and
under trio one loop over a memory channel fed by the calls, which run in a
nursery (cancelling the nursery cancels the losers and waits for them).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar

from ._aio import running_trio
from ._budget import RetryBudget
from ._core import HEDGE, Policy, qualified_name
from ._deadline import DEADLINE, monotonic
from ._fallback import ExceptionTypes, check_exception_types
from ._validate import SECONDS, not_bare, positive_int, to_seconds
from .instrumentation._events import HedgeStarted, HedgeWon
from .instrumentation._hooks import emit
from .instrumentation._observe import Observe, watch_for

_SLOW, _FAILED = "slow", "failed"


class Hedge(Policy):
    """Race backup calls against a slow one; see :func:`hedge`."""

    _kind: ClassVar[str] = "hedge"
    _rank: ClassVar[int] = HEDGE
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        delay: float | timedelta,
        *,
        max_hedges: int = 1,
        on: ExceptionTypes = Exception,
        budget: RetryBudget | None = None,
        name: str | None = None,
    ) -> None:
        """Build the policy; see :func:`hedge` for the parameters.

        Args:
            delay: See :func:`hedge`.
            max_hedges: See :func:`hedge`.
            on: See :func:`hedge`.
            budget: See :func:`hedge`.
            name: See :func:`hedge`.
        """
        super().__init__(name)
        not_bare(delay, "delay", SECONDS, "@fluxus.hedge(0.1)")
        self.delay: float = to_seconds(delay, "delay")
        self.max_hedges: int = positive_int(max_hedges, "max_hedges")
        self.on: tuple[type[Exception], ...] = check_exception_types(on)
        if budget is not None and not isinstance(budget, RetryBudget):
            msg = f"budget must be a fluxus.RetryBudget or None, got {budget!r}"
            raise TypeError(msg)
        self.budget = budget

    def _next(
        self, now: float, last_start: float, started: int, *, failed: bool
    ) -> float | None:
        """Return when the next call is due, or ``None`` if none may start.

        The next call is due *delay* after the last one started, or at once
        after a failure; none starts once ``max_hedges`` extra calls have
        started, nor at or after the enclosing deadline.
        """
        if started > self.max_hedges:
            return None
        due = now if failed else max(now, last_start + self.delay)
        deadline = DEADLINE.get()
        if deadline is not None and due >= deadline:
            return None
        return due

    def _plan(
        self, now: float, last_start: float, started: int, *, failed: bool, spent: bool
    ) -> tuple[float | None, bool]:
        """Decide when the next call is due; return ``(due, spent)``.

        *due* is ``None`` when no call may start. A call due now spends one
        retry of the shared budget, if any; once
        the budget refused, no further call starts.
        """
        due = None if spent else self._next(now, last_start, started, failed=failed)
        if (
            due is not None
            and (failed or due <= now)
            and self.budget is not None
            and not self.budget.try_spend()
        ):
            return None, True
        return due, spent

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        del observe  # never built: the function is refused
        msg = (
            f"fluxus.hedge protects async def functions only; "
            f"{qualified_name(func)} is a plain function, whose call cannot "
            "be cancelled when another one wins"
        )
        raise TypeError(msg)

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        race = self._race
        calls = self._counters.calls

        async def hedge_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc] # set when watched
            next(calls)
            if running_trio():
                return await race_trio(func, function, args, kwargs)
            return await race(func, function, args, kwargs)

        race_trio = self._race_trio
        return hedge_wrapper

    async def _race(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run *func*, hedged; return the first result or raise.

        The delay runs from the moment the last call really began (its
        first step), not from when it was scheduled; and when the timer
        fires, answers that arrived meanwhile are collected before a hedge
        starts. On a busy loop both happen late, and a hedge would start
        for calls that were not slow (benchmarks/bench_fallback_bulkhead_hedge.py).
        """
        began = monotonic()
        begun: dict[int, float] = {}
        order: dict[asyncio.Future[Any], int] = {
            asyncio.ensure_future(_begin(begun, 0, func(*args, **kwargs))): 0
        }
        running = set(order)
        error: BaseException | None = None
        failed = spent = False
        if self.budget is not None:
            self.budget.record_attempt()
        try:
            while True:
                now = monotonic()
                last_start = begun.get(len(order) - 1, now)
                due, spent = self._plan(
                    now, last_start, len(order), failed=failed, spent=spent
                )
                if due is not None and (failed or due <= now):
                    reason, failed = (_FAILED if failed else _SLOW), False
                    self._started(len(order), now - began, reason, function)
                    call = _begin(begun, len(order), func(*args, **kwargs))
                    backup = asyncio.ensure_future(call)
                    order[backup] = len(order)
                    running.add(backup)
                    continue
                if not running:
                    raise error  # type: ignore[misc] # every call failed, so it is set
                done, running = await asyncio.wait(
                    running,
                    timeout=None if due is None else due - now,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:  # the timer: let answers already in land first
                    await asyncio.sleep(0)
                    done = {task for task in running if task.done()}
                    running -= done
                for task in done:
                    outcome = task.exception()
                    if outcome is None:
                        return self._won(task.result(), order[task], function, began)
                    if not isinstance(outcome, self.on):
                        raise outcome
                    error, failed = outcome, True
        finally:
            await _cancel(running)

    async def _race_trio(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run *func*, hedged, under trio; see :meth:`_race`."""
        import trio  # noqa: PLC0415 - only under trio, which is then imported

        began = monotonic()
        begun: dict[int, float] = {}
        call = functools.partial(func, *args, **kwargs)
        send, receive = trio.open_memory_channel[tuple[int, Exception | None, Any]](
            math.inf
        )

        started = running = 1
        error: Exception | None = None
        failed = spent = False
        won: tuple[int, Any] | None = None
        if self.budget is not None:
            self.budget.record_attempt()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_attempt, send, begun, 0, call)
                while True:
                    now = monotonic()
                    last_start = begun.get(started - 1, now)
                    due, spent = self._plan(
                        now, last_start, started, failed=failed, spent=spent
                    )
                    if due is not None and (failed or due <= now):
                        reason, failed = (_FAILED if failed else _SLOW), False
                        self._started(started, now - began, reason, function)
                        nursery.start_soon(_attempt, send, begun, started, call)
                        started, running = started + 1, running + 1
                        continue
                    if not running:
                        break  # every call failed: the last failure is raised
                    with trio.move_on_after(math.inf if due is None else due - now):
                        number, outcome, result = await receive.receive()
                        running -= 1
                        if outcome is None:
                            won = number, result
                            break
                        error, failed = outcome, True
                        if not isinstance(outcome, self.on):
                            break
                # The losers are cancelled; the nursery waits for them to end.
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_flat(group, trio.Cancelled)
        if won is None:
            raise error  # type: ignore[misc] # a call failed, so it is set
        return self._won(won[1], won[0], function, began)

    def _won(self, result: Any, number: int, function: str, began: float) -> Any:
        if number:
            next(self._counters.hedges_won)
            emit(
                HedgeWon(
                    policy=self.name,
                    function=function,
                    hedge=number,
                    after=monotonic() - began,
                )
            )
        return result

    def _started(self, number: int, after: float, reason: str, function: str) -> None:
        next(self._counters.hedges)
        emit(
            HedgeStarted(
                policy=self.name,
                function=function,
                hedge=number,
                after=after,
                reason=reason,
            )
        )


async def _begin(begun: dict[int, float], number: int, call: Awaitable[Any]) -> Any:
    """Await call *number* of a race, noting when it really began."""
    begun[number] = monotonic()
    return await call


async def _attempt(
    send: Any,
    begun: dict[int, float],
    number: int,
    call: Callable[[], Awaitable[Any]],
) -> None:
    """Run call *number* of a trio race and send its outcome to the race."""
    begun[number] = monotonic()
    try:
        result = await call()
    except Exception as exc:  # noqa: BLE001 - the race decides
        send.send_nowait((number, exc, None))
    else:
        send.send_nowait((number, None, result))


def _raise_flat(group: BaseExceptionGroup[Any], cancelled: type[BaseException]) -> None:
    """Raise a nursery's group as the one exception it stands for.

    Under trio, a caller cancelled while its hedged calls run gets one
    ``Cancelled`` from each call and from the waiting loop: one of them is
    raised for all, as every other policy raises it. A call that raised a
    ``BaseException`` (``KeyboardInterrupt``) has it raised as itself, as
    under asyncio. A group of several such exceptions is raised as it is.
    """
    _, others = group.split(cancelled)
    leaves = _leaves(group if others is None else others)
    if others is not None and len(leaves) > 1:
        raise group
    raise leaves[0] from None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def _cancel(tasks: set[asyncio.Future[Any]]) -> None:
    """Cancel *tasks* and wait until each has really ended."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        # Cancelled while waiting for them: still let them end first.
        await asyncio.wait(tasks)
        raise
    for task in tasks:  # retrieved, so asyncio does not log them
        if not task.cancelled():
            task.exception()


def hedge(
    delay: float | timedelta,
    *,
    max_hedges: int = 1,
    on: ExceptionTypes = Exception,
    budget: RetryBudget | None = None,
    name: str | None = None,
) -> Hedge:
    """Return a policy that starts backup calls when an ``async`` call is slow.

    Args:
        delay: Seconds (or a timedelta) to wait for a call before the next
            one starts; ``0`` starts every call at once.
        max_hedges: The most extra calls one call may start (an int >= 1).
        on: The exception type, or tuple of types, after which the next
            hedge starts at once instead of waiting for *delay*; any other
            exception is raised at once and the other calls are cancelled.
        budget: A :class:`~fluxus.RetryBudget` shared with retries: every
            hedged call counts as a first attempt, every extra call spends
            one retry, and no extra call starts once the budget is spent.
        name: The name in events; by default the first decorated function's.

    Returns:
        A :class:`Hedge` policy; decorate ``async def`` functions with it.

    Raises:
        TypeError: If a parameter has the wrong type, or (when the policy is
            applied) the function is not an ``async def`` function.
        ValueError: If *delay* is negative or *max_hedges* below 1.

    The first call to return wins and the others are cancelled; the hedged
    call returns only once their cancellation has ended. No hedge starts
    once an enclosing :func:`fluxus.timeout` deadline has passed. The
    testing mode does not change the delay: a hedge never makes a call
    slower, only costs an extra call.
    """
    return Hedge(delay, max_hedges=max_hedges, on=on, budget=budget, name=name)
