"""A bulkhead's steps: take a slot (waiting or refusing), give it back."""

from __future__ import annotations

import functools
import math
import time
from typing import TYPE_CHECKING, Any, NoReturn

from fluxus._core import Policy
from fluxus._deadline import DEADLINE, HELD, Held, monotonic
from fluxus.exceptions import BulkheadFull
from fluxus.instrumentation._events import BulkheadRejected
from fluxus.instrumentation._hooks import emit

from ._hold import _Hold
from ._store import Compartment, Unreachable

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import ContextVar, Token


class _Steps(Policy):
    """Take a slot or refuse, give it back: the decisions both drivers share."""

    # Set by Bulkhead.__init__.
    max_concurrent: int
    max_waiting: int
    timeout: float | None
    fail_open: bool
    lease: float
    _store: Compartment
    _blocks: ContextVar[tuple[tuple[Any, ...], ...]]

    @property
    def in_use(self) -> int:
        """Slots taken now (with Redis storage: by every process sharing it)."""
        return self._store.in_use

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot now."""
        return self._store.waiting

    # -- decisions shared by both drivers ---------------------------------

    def _budget(self) -> float:
        """Return how long a caller may wait: its timeout, its deadline."""
        if not self.max_waiting:
            return 0.0
        budget = math.inf if self.timeout is None else self.timeout
        deadline = DEADLINE.get()
        if deadline is not None:
            budget = min(budget, deadline - monotonic())
        return budget

    def _reject(
        self, function: str, waited: float, storage: str | None = None
    ) -> NoReturn:
        next(self._counters.rejections)
        emit(
            BulkheadRejected(
                policy=self.name,
                function=function,
                max_concurrent=self.max_concurrent,
                max_waiting=self.max_waiting,
                waited=waited,
            )
        )
        raise BulkheadFull(self.name, self.max_concurrent, storage=storage)

    # -- the sync driver --------------------------------------------------

    def _admit(self, function: str) -> object:
        """Return the token of a slot, or raise :class:`~fluxus.BulkheadFull`."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        store = self._store
        if not store.remote:
            token = store.take(0.0)
            if token is not None:
                return token
            if not self.max_waiting:
                self._reject(function, 0.0)
        started = time.monotonic()
        try:
            token = store.take(max(0.0, self._budget()))
        except Unreachable as exc:
            self._reject(function, 0.0, exc.storage)
        if token is None:
            self._reject(function, time.monotonic() - started)
        return token

    def _sync_steps(
        self, *, keeps: bool
    ) -> tuple[Callable[[str], object], Callable[[Any], None]]:
        """Return the steps around a sync call: take a slot, give it back.

        With *keeps*, the slot is published so that work a thread timeout
        abandons keeps it until it returns.
        """
        if not keeps:
            return self._admit, self._store.give_back
        admit, hold = self._admit, self._hold

        def enter(function: str) -> object:
            return hold(admit(function))

        return enter, self._unhold

    def _hold(self, token: object) -> tuple[_Hold, Token[tuple[Held, ...]]]:
        """Publish the slot of *token* so that abandoned work keeps it."""
        hold = _Hold(functools.partial(self._store.give_back, token))
        return hold, HELD.set((*HELD.get(), hold))

    @staticmethod
    def _unhold(held: tuple[_Hold, Token[tuple[Held, ...]]]) -> None:
        hold, published = held
        HELD.reset(published)
        hold.drop()

    # -- the async driver -------------------------------------------------

    async def _admit_async(self, function: str) -> object:
        """Return the token of a slot without blocking the loop; see :meth:`_admit`."""
        next(self._counters.calls)
        store = self._store
        if not store.remote:
            token = store.take(0.0)
            if token is not None:
                return token
        return await self._wait_async(function)

    async def _wait_async(self, function: str) -> object:
        """Wait for a slot after the free ones were found taken (async)."""
        if not self._store.remote and not self.max_waiting:
            self._reject(function, 0.0)
        started = time.monotonic()
        try:
            token = await self._store.take_async(max(0.0, self._budget()))
        except Unreachable as exc:
            self._reject(function, 0.0, exc.storage)
        if token is None:
            self._reject(function, time.monotonic() - started)
        return token
