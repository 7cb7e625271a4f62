"""The :class:`Timeout` policy: its configuration, and which driver runs a call."""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, ClassVar, Literal

from fluxus._core import TIMEOUT, Policy, check_callable, positive_int
from fluxus._validate import SECONDS as _SECONDS
from fluxus._validate import not_bare, positive_seconds
from fluxus.exceptions import DeadlineExceeded

from . import _strategies
from ._block import Blocks
from ._pool import Bound
from ._verdicts import Verdicts

Strategy = Literal["thread", "signal", "cooperative"]

STRATEGIES: tuple[str, ...] = ("thread", "signal", "cooperative")


class Timeout(Policy):
    """Give up on a call at its deadline; see :func:`timeout`."""

    _kind: ClassVar[str] = "timeout"
    _rank: ClassVar[int] = TIMEOUT

    def __init__(
        self,
        seconds: float | timedelta,
        *,
        strategy: Strategy = "thread",
        on_timeout: Callable[[DeadlineExceeded], BaseException | None] | None = None,
        max_threads: int = 32,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        not_bare(seconds, "seconds", _SECONDS, "@fluxus.timeout(5)")
        budget = positive_seconds(seconds, "seconds")
        if strategy not in STRATEGIES:
            choices = ", ".join(map(repr, STRATEGIES))
            msg = f"strategy must be one of {choices}, got {strategy!r}"
            raise ValueError(msg)
        if strategy == "signal" and not hasattr(signal, "setitimer"):
            msg = "strategy='signal' needs signal.setitimer, missing on this platform"
            raise ValueError(msg)
        positive_int(max_threads, "max_threads")
        check_callable(on_timeout, "on_timeout")
        self.seconds = budget
        self.strategy: Strategy = strategy
        self.max_threads = max_threads
        self._on_timeout = on_timeout
        self._verdicts = Verdicts(budget, on_timeout, self._counters, self._own_name)
        self._bound = Bound(max_threads)
        self._blocks = Blocks(self, self._verdicts, strategy)

    def _own_name(self) -> str:
        return self.name

    # -- block forms ------------------------------------------------------

    def __enter__(self) -> None:
        """Publish the deadline for the block (``with policy:``).

        On exit, a block that ran to or past its deadline raises
        :class:`~fluxus.DeadlineExceeded` (a failure it raised late becomes
        the cause). Every strategy runs a block in the caller's thread:
        ``"thread"`` and ``"cooperative"`` judge it on exit, ``"signal"``
        (main thread only) also interrupts it at the deadline. Events,
        :attr:`stats` and observers see a block as a decorated call of the
        function the block is written in.

        Raises:
            DeadlineExceeded: If an enclosing deadline has passed already.
            ValueError: With ``"signal"`` outside the main thread.
        """
        self._blocks.enter(sys._getframe(1))  # noqa: SLF001 - the block's frame

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Raise :class:`~fluxus.DeadlineExceeded` if the block ended late."""
        self._blocks.exit(error)

    async def __aenter__(self) -> None:
        """Cancel the block at the deadline (``async with policy:``).

        The block is cancelled as a decorated ``async def`` call is (with
        :func:`asyncio.timeout`, or a cancel scope under trio) and
        :class:`~fluxus.DeadlineExceeded` leaves it; with ``"cooperative"``
        the deadline is only published and the block judged on exit.
        """
        cooperative = self.strategy == "cooperative"
        await self._blocks.aenter(sys._getframe(1), cooperative)  # noqa: SLF001

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Raise :class:`~fluxus.DeadlineExceeded` if the deadline cut the block."""
        return await self._blocks.aexit(kind, error, traceback)

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if self.strategy == "cooperative":
            return _strategies.cooperative(self, self._verdicts, func)
        if self.strategy == "signal":
            return _strategies.signal_alarm(self, self._verdicts, func)
        return _strategies.thread(self, self._verdicts, self._bound, func)

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        if self.strategy == "cooperative":
            return _strategies.cooperative_async(self, self._verdicts, func)
        return _strategies.cancelling(self, self._verdicts, func)


def timeout(
    seconds: float | timedelta,
    *,
    strategy: Strategy = "thread",
    on_timeout: Callable[[DeadlineExceeded], BaseException | None] | None = None,
    max_threads: int = 32,
    name: str | None = None,
) -> Timeout:
    """Return a policy that gives the caller control back after *seconds*.

    Args:
        seconds: The time budget of each call (a float or a timedelta, > 0).
            An enclosing fluxus deadline that ends sooner wins.
        strategy: How a sync call is bounded: ``"thread"`` (run it in a
            worker thread and walk away at the deadline; works everywhere),
            ``"signal"`` (interrupt it with ``SIGALRM``; main thread only) or
            ``"cooperative"`` (only publish the deadline; a late call raises
            once it returns). ``async def`` functions are always cancelled
            through :func:`asyncio.timeout`, except with ``"cooperative"``.
        on_timeout: Called with the :class:`~fluxus.DeadlineExceeded`; an
            exception it returns is raised ``from`` it instead.
        max_threads: With ``"thread"``, the most worker threads this policy's
            ABANDONED calls (calls that outlived their deadline and still
            run) may hold. Callers are not bounded: each caller thread has
            a worker of its own.
        name: The name in events and errors; by default the first decorated
            function's.

    Returns:
        A :class:`Timeout` policy; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *seconds* is not above 0, *strategy* is unknown, or
            *max_threads* is below 1.

    No strategy returns a late result: a call that ends at or past its
    deadline raises :class:`~fluxus.DeadlineExceeded` (a failure it raised
    late becomes its ``__cause__``). ``"signal"`` interrupts a callee that
    caught the interrupt again every 10 ms until it ends; one that swallows
    every interrupt and never ends cannot be walked away from (it runs in
    the caller's thread): use ``"thread"`` for such code.

    **What ``"thread"`` does to thread-local state.** The call runs in
    another thread than its caller. Context variables are copied over (so
    :func:`fluxus.remaining`, request contexts kept in context variables
    and structlog's contextvars are seen), but everything kept per THREAD is
    not: the worker has its own Django database connection (the call runs
    outside the caller's ``atomic()`` block and transaction, and cannot see
    its uncommitted rows), its own SQLAlchemy scoped session, its own
    ``threading.local`` values. Code that must run in the caller's
    transaction wants ``"cooperative"`` (with ``fluxus.remaining()`` fed to
    its driver's timeouts, such as ``statement_timeout``) or, in the main
    thread, ``"signal"``.

    A call abandoned by ``"thread"`` keeps running in its worker thread
    until it returns, holding that thread and whatever the function holds;
    its result is dropped. Only walk away from calls that are safe to
    abandon (idempotent, or that honour :func:`fluxus.remaining`). While
    *max_threads* abandoned calls of this policy still run, a call fails at
    once with :class:`~fluxus.ThreadsExhausted`, a rejection
    (:func:`fluxus.is_rejection`): never retried, never a circuit breaker
    failure, answered 503 by the web integrations.
    """
    return Timeout(
        seconds,
        strategy=strategy,
        on_timeout=on_timeout,
        max_threads=max_threads,
        name=name,
    )
