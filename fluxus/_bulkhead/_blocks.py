"""The block forms: ``with bulkhead:`` and ``async with bulkhead:``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fluxus._core import block_name
from fluxus.instrumentation._observe import WATCH, block_ended, block_started

from ._steps import _Steps

if TYPE_CHECKING:
    from types import TracebackType


class _BlockForms(_Steps):
    """A bulkhead around a block of code instead of a function."""

    def __enter__(self) -> None:
        """Take a slot for the block, or raise :class:`~fluxus.BulkheadFull`.

        Events, :attr:`stats` and observers see a block as a decorated call
        of the function the block is written in.
        """
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            held = self._hold(self._admit(function))
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        self._blocks.set((*self._blocks.get(), (held, observed)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the block's slot back."""
        *outer, (held, observed) = self._blocks.get()
        self._blocks.set(tuple(outer))
        try:
            self._unhold(held)
        finally:
            if observed is not None:
                block_ended(observed, exc)

    async def __aenter__(self) -> None:
        """Take a slot for the block without blocking the loop."""
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            token = await self._admit_async(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        self._blocks.set((*self._blocks.get(), (token, observed)))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the block's slot back."""
        *outer, (token, observed) = self._blocks.get()
        self._blocks.set(tuple(outer))
        try:
            await self._store.give_back_async(token)
        finally:
            if observed is not None:
                block_ended(observed, exc)
