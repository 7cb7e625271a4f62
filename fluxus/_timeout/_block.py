"""``with fluxus.timeout(s):`` and ``async with``: a deadline around a block.

The block form carries out the same :class:`Verdicts` as the decorator's
drivers (:mod:`._strategies`), so its events, stats and errors are theirs:

- sync, every strategy: the deadline is published for the block, and a
  block that ends at or past it raises :class:`~fluxus.DeadlineExceeded`
  on exit (cooperative: a block cannot be walked away from in a worker
  thread); ``"signal"`` in the main thread also interrupts the block at
  the deadline, as it interrupts a decorated call;
- async: the block is cancelled at the deadline (:func:`asyncio.timeout`,
  or a trio cancel scope), except with ``"cooperative"``, which only
  publishes the deadline and judges the block on exit.

What an open block needs on exit is kept per thread and task (a context
variable of the policy), so one policy guards nested and concurrent blocks.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fluxus._aio import running_trio
from fluxus._core import block_name
from fluxus._deadline import DEADLINE, monotonic
from fluxus.exceptions import DeadlineExceeded
from fluxus.instrumentation._observe import WATCH, block_ended, block_started

from ._strategies import REARM_SECONDS, _Alarm, _rearm

if TYPE_CHECKING:
    from contextvars import Token
    from types import FrameType, TracebackType

    from fluxus._core import Policy

    from ._verdicts import Verdicts

modules = sys.modules


class _Open:
    """One open block: what its exit needs."""

    __slots__ = (
        "deadline",
        "function",
        "handler",
        "now",
        "observed",
        "owner",
        "scope",
        "strategy",
        "timer",
        "token",
    )

    def __init__(self, now: float, deadline: float, token: Token[float | None]) -> None:
        self.now = now
        self.deadline = deadline
        self.token = token
        self.strategy = "cooperative"
        self.function = ""
        self.observed: Any = None
        self.owner: list[bool] | None = None  # signal: armed while non-empty
        self.handler: Any = None
        self.timer: tuple[float, float] = (0.0, 0.0)
        self.scope: Any = None


class Blocks:
    """The block form of one timeout policy."""

    __slots__ = ("_open", "policy", "signal", "verdicts")

    def __init__(self, policy: Policy, verdicts: Verdicts, strategy: str) -> None:
        self.policy = policy
        self.verdicts = verdicts
        self.signal = strategy == "signal"
        self._open: ContextVar[tuple[_Open, ...]] = ContextVar(
            "fluxus_timeout_blocks", default=()
        )

    # -- the steps both forms share -------------------------------------------

    def _enter(self, frame: FrameType, strategy: str) -> _Open:
        """Count the block, start it (or refuse it), publish its deadline."""
        verdicts = self.verdicts
        function = block_name(frame)
        next(verdicts.counters.calls)
        observed = block_started(self.policy, function) if WATCH.observers else None
        try:
            now = monotonic()
            deadline = verdicts.start(now, function, strategy)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        entry = _Open(now, deadline, DEADLINE.set(deadline))
        entry.strategy = strategy
        entry.function = function
        entry.observed = observed
        self._open.set((*self._open.get(), entry))
        return entry

    def _pop(self) -> _Open:
        entries = self._open.get()
        self._open.set(entries[:-1])
        entry = entries[-1]
        DEADLINE.reset(entry.token)
        return entry

    def _late(self, entry: _Open, cause: BaseException | None) -> None:
        """Raise the timeout of the block *entry* (told to the observers)."""
        try:
            self.verdicts.late(
                entry.function, entry.strategy, entry.now, entry.deadline, cause
            )
        except BaseException as exc:
            block_ended(entry.observed, exc)
            raise

    def _settle(self, entry: _Open, error: BaseException | None) -> None:
        """Judge a block that ended: late (raise) or in time (tell, return)."""
        if (
            (error is None or isinstance(error, Exception))
            and not isinstance(error, DeadlineExceeded)
            and monotonic() >= entry.deadline
        ):
            self._late(entry, error)
        block_ended(entry.observed, error)

    # -- sync ---------------------------------------------------------------

    def enter(self, frame: FrameType) -> None:
        """Open a sync block; with ``"signal"``, arm the interrupt."""
        if not self.signal:
            self._enter(frame, "cooperative")
            return
        if threading.current_thread() is not threading.main_thread():
            name = self.policy.name
            msg = (
                f"fluxus.timeout {name!r} uses strategy='signal', which works "
                f"only in the main thread (SIGALRM); a block in "
                f"{block_name(frame)} was entered in "
                f"{threading.current_thread().name!r}. Use the default strategy "
                "(the block is then judged on exit) instead"
            )
            raise ValueError(msg)
        entry = self._enter(frame, "signal")
        armed = entry.owner = [True]

        def on_alarm(_signum: int, _frame: FrameType | None) -> None:
            if armed:
                raise _Alarm(armed)

        entry.handler = signal.signal(signal.SIGALRM, on_alarm)
        entry.timer = signal.getitimer(signal.ITIMER_REAL)
        signal.setitimer(
            signal.ITIMER_REAL, max(entry.deadline - entry.now, 1e-6), REARM_SECONDS
        )

    def exit(self, error: BaseException | None) -> None:
        """Close a sync block: raise the timeout if it ran past its deadline."""
        entry = self._pop()
        if entry.owner is not None:
            entry.owner.clear()  # before the timer: an alarm now does nothing
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, entry.handler)
            _rearm(entry.timer, monotonic() - entry.now)
            if isinstance(error, _Alarm) and error.owner is entry.owner:
                self._late(entry, None)
        self._settle(entry, error)

    # -- async --------------------------------------------------------------

    async def aenter(self, frame: FrameType, cooperative: bool) -> None:  # noqa: FBT001
        """Open an async block: cancelled at the deadline unless cooperative."""
        if cooperative:
            self._enter(frame, "cooperative")
            return
        if "trio" in modules and running_trio():
            import trio  # noqa: PLC0415 - imported already when trio runs

            entry = self._enter(frame, "trio")
            cancel = trio.CancelScope(
                deadline=trio.current_time() + (entry.deadline - entry.now)
            )
            cancel.__enter__()
            entry.scope = cancel
        else:
            entry = self._enter(frame, "asyncio")
            try:
                timeout = asyncio.timeout(entry.deadline - entry.now)
                await timeout.__aenter__()
            except BaseException as exc:  # outside a task: no block to run
                block_ended(self._pop().observed, exc)
                raise
            entry.scope = timeout

    async def aexit(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Close an async block; raise the timeout if the deadline cancelled it."""
        entry = self._pop()
        scope = entry.scope
        if scope is None:
            self._settle(entry, error)
            return False
        if entry.strategy == "trio":
            swallowed = scope.__exit__(kind, error, traceback)
            if scope.cancelled_caught:
                self._late(entry, error)
            block_ended(entry.observed, None if swallowed else error)
            return bool(swallowed)
        try:
            await scope.__aexit__(kind, error, traceback)
        except TimeoutError as exc:
            if scope.expired():
                self._late(entry, exc.__cause__ or exc)
            block_ended(entry.observed, exc)
            raise
        block_ended(entry.observed, error)
        return False
