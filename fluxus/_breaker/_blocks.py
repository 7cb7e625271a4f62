"""The block forms: ``with breaker:`` and ``async with breaker:``."""

from __future__ import annotations

import contextvars
import sys
from types import TracebackType
from typing import Any, Self

from fluxus._core import block_name
from fluxus.instrumentation._observe import WATCH, block_ended, block_started

from ._listeners import _block
from ._steps import _Steps

#: An open block: its token, its start, its function, its observers' states.
_Entry = tuple[object, float, str, Any]


class _Blocks:
    """The blocks open in this thread or task, innermost last."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
            "fluxus_breaker_blocks", default=()
        )

    def push(self, entry: _Entry) -> None:
        self._open.set((*self._open.get(), entry))

    def pop(self) -> _Entry:
        entries = self._open.get()
        self._open.set(entries[:-1])
        return entries[-1]


class _BlockForms(_Steps):
    """A breaker around a block of code instead of a function."""

    _blocks: _Blocks

    def __enter__(self) -> Self:
        """Admit the block, or raise :class:`~fluxus.CircuitOpenError`.

        The block's outcome is recorded on exit: an :class:`Exception`
        leaving it is a failure unless excluded; a ``BaseException`` counts
        neither. Events, :attr:`stats` and observers see a block as a
        decorated call of the function the block is written in.
        """
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            token = self._admit(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        if self._listeners:
            self._before_call(_block, (), {})
        self._blocks.push((token, self._clock(), function, observed))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the block's outcome; never swallows its exception."""
        token, started, function, observed = self._blocks.pop()
        if exc is None:
            self._record_success(token, function, slow=self._slow(started))
        else:
            self._record_failure(token, exc, function, slow=self._slow(started))
        if observed is not None:
            block_ended(observed, exc)

    async def __aenter__(self) -> Self:
        """Admit the block, awaiting a remote storage; see :meth:`__enter__`."""
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            if self._store.get().remote:
                token = await self._admit_async(function)
            else:
                token = self._admit(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        if self._listeners:
            self._before_call(_block, (), {})
        self._blocks.push((token, self._clock(), function, observed))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the block's outcome; see :meth:`__exit__`."""
        token, started, function, observed = self._blocks.pop()
        slow = self._slow(started)
        remote = self._store.get().remote
        if exc is None:
            if remote:
                await self._record_success_async(token, function, slow=slow)
            else:
                self._record_success(token, function, slow=slow)
        elif remote:
            await self._record_failure_async(token, exc, function, slow=slow)
        else:
            self._record_failure(token, exc, function, slow=slow)
        if observed is not None:
            block_ended(observed, exc)
