"""The admission decision and its two drivers, sync and async.

:meth:`_Drivers._waiting` decides what a caller refused or told to wait
does, step by step; one small sync driver and one small async driver run
its steps (see :mod:`._hold`) against the storage's answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NoReturn

from fluxus._config import CONFIG
from fluxus._core import qualified_name
from fluxus._deadline import DEADLINE, effective_wait, remaining, wait_async, wait_sync
from fluxus.exceptions import RateLimitExceeded
from fluxus.instrumentation._events import (
    RateLimited,
)
from fluxus.instrumentation._hooks import emit
from fluxus.instrumentation._observe import Observe, watch_for

from ._configured import _Configured
from ._gcra import ADMITTED, Reservation, StorageUnavailableError
from ._hold import (
    HOLD,
    REFUND,
    TAKE,
    WAIT,
    Step,
    hold,
    hold_async,
    past_deadline,
    refund,
    refund_async,
    send,
)
from ._plan import (
    _Plan,
)
from ._queue import Ticket


class _Drivers(_Configured):
    """The admission of one call, sync and async."""

    def _call_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self._key is not None  # noqa: S101 - only called when there is one
        value = self._key(*args, **kwargs)
        if not isinstance(value, str):
            msg = (
                f"the key function of rate limit {self.name!r} must return a str, "
                f"got {value!r}"
            )
            raise TypeError(msg)
        return value

    def _call_cost(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        cost = self._cost
        if isinstance(cost, int):
            return cost
        value = cost(*args, **kwargs)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = (
                f"the cost function of rate limit {self.name!r} must return an "
                f"int >= 1, got {value!r}"
            )
            raise ValueError(msg)
        self._check_cost_fits(self._plan, value)
        return value

    @staticmethod
    def _budget(timeout: float | None) -> float:
        """Return how long a caller may wait: its timeout, its deadline."""
        budget = math.inf if timeout is None else timeout
        if DEADLINE.get() is not None and not CONFIG.testing.active:
            budget = min(budget, remaining() or 0.0)
        return budget

    def _reject(self, function: str, wait: float, timeout: float | None) -> NoReturn:
        next(self._counters.rejections)
        emit(
            RateLimited(
                policy=self.name, function=function, retry_after=wait, timeout=timeout
            )
        )
        down = self._health.refusing()
        raise RateLimitExceeded(self.name, wait, self.storage if down else None)

    def _waiting(
        self, answer: Reservation, budget: float, timeout: float | None, function: str
    ) -> Generator[Step, Reservation | None, None]:
        """Decide what a caller refused or told to wait does, step by step.

        The sync and the async driver run this one decision: it yields
        ``("take", budget)`` (the driver answers with the storage's
        :class:`Reservation`), ``("wait", seconds)``, ``("refund", answer)``
        (give a reserved slot back) and ``("hold", answer)``: wait for the
        reserved slot, giving it back (wherever it stands in the queue)
        should the wait be cancelled. A slot due after the enclosing
        deadline is given back and the call rejected at once.
        """
        until = time.monotonic() + budget
        while not answer.admitted:
            if answer.wait > budget:
                self._reject(function, answer.wait, timeout)
            if not effective_wait(answer.wait):
                return  # testing mode: the window would have reset by now
            yield WAIT, answer.wait
            budget = max(0.0, until - time.monotonic())
            taken = yield TAKE, budget
            assert taken is not None  # noqa: S101 - the drivers answer takes
            answer = taken
        ticket = answer.token
        if ticket is None:
            return
        if isinstance(ticket, Ticket) and past_deadline(ticket):
            # The storage step outlasted the budget (a slow Redis, a busy
            # lock): the slot fell due after the enclosing deadline, when
            # the caller (a thread timeout's, say) has gone. Give it back.
            yield REFUND, answer
            self._reject(function, ticket.left(), timeout)
        yield HOLD, answer

    def _take(
        self, plan: _Plan, key: str, budget: float, function: str, cost: int
    ) -> Reservation:
        health = self._health
        if health.down_until is not None and health.resting():
            return self._resting_answer(plan, key, budget, cost)
        try:
            answer: Reservation = plan.store.take(
                self._store_key(plan, key), plan.spec, budget, cost
            )
        except StorageUnavailableError as exc:
            return self._unreachable(
                exc, function, plan=plan, key=key, budget=budget, cost=cost
            )
        if health.down_until is not None:
            health.answered(function)
        return answer

    def _admit(
        self, key: str, timeout: float | None, function: str, cost: int = 1
    ) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if plan.store is None:
            plan = self._resolve()
        if DEADLINE.get() is None:  # the usual case, spared a call
            budget = math.inf if timeout is None else timeout
        else:
            budget = self._budget(timeout)
        answer = self._take(plan, key, budget, function, cost)
        if answer is ADMITTED:
            return
        if answer.token is not None and DEADLINE.get() is None:
            hold(answer)  # a reserved slot, no deadline: just wait
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            if kind is TAKE:
                reply = self._take(plan, key, value, function, cost)
            elif kind is WAIT:
                wait_sync(value)
            elif kind is REFUND:
                refund(value)
            else:
                hold(value)
            step = send(steps, reply)

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit
        call_key = self._call_key if self._key is not None else None
        call_cost = self._call_cost if not isinstance(self._cost, int) else None
        cost = self._cost if isinstance(self._cost, int) else 1

        def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            admit(
                call_key(args, kwargs) if call_key else "",
                self.timeout,
                function,
                call_cost(args, kwargs) if call_cost else cost,
            )
            return func(*args, **kwargs)

        return rate_limit_wrapper

    async def _take_async(
        self, plan: _Plan, key: str, budget: float, function: str, cost: int
    ) -> Reservation:
        if not plan.io:
            return self._take(plan, key, budget, function, cost)
        if self._health.resting():
            return self._resting_answer(plan, key, budget, cost)
        try:
            answer: Reservation = await plan.store.take_async(
                self._store_key(plan, key), plan.spec, budget, cost
            )
        except StorageUnavailableError as exc:
            return self._unreachable(
                exc, function, plan=plan, key=key, budget=budget, cost=cost
            )
        self._health.answered(function)
        return answer

    async def _admit_async(
        self,
        key: str,
        timeout: float | None,  # noqa: ASYNC109 - a wait budget, not an I/O timeout
        function: str,
        cost: int = 1,
    ) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        plan = self._plan
        if plan.store is None:
            plan = self._resolve()
        budget = self._budget(timeout)
        answer = (
            await self._take_async(plan, key, budget, function, cost)
            if plan.io
            else self._take(plan, key, budget, function, cost)  # no coroutine
        )
        if answer is ADMITTED:
            return
        if answer.token is not None and DEADLINE.get() is None:
            await hold_async(answer)  # a reserved slot, no deadline: just wait
            return
        steps = self._waiting(answer, budget, timeout, function)
        step = next(steps, None)
        while step is not None:
            kind, value = step
            reply = None
            if kind is TAKE:
                reply = await self._take_async(plan, key, value, function, cost)
            elif kind is WAIT:
                await wait_async(value)
            elif kind is REFUND:
                await refund_async(value)
            else:
                await hold_async(value)
            step = send(steps, reply)

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        admit = self._admit_async
        call_key = self._call_key if self._key is not None else None
        call_cost = self._call_cost if not isinstance(self._cost, int) else None
        cost = self._cost if isinstance(self._cost, int) else 1

        async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            await admit(
                call_key(args, kwargs) if call_key else "",
                self.timeout,
                function,
                call_cost(args, kwargs) if call_cost else cost,
            )
            return await func(*args, **kwargs)

        return rate_limit_wrapper
