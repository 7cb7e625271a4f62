"""The bulkhead as ``fluxus.stack`` runs it: one gate per function."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from fluxus._core import qualified_name

from ._hold import _abandons

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._steps import _Steps


class SlotGate:
    """The bulkhead's gate for one function, as ``fluxus.stack`` runs it.

    Sync code calls :attr:`acquire` (a slot, or
    :class:`~fluxus.BulkheadFull`) and gives what it returned to
    :attr:`release`; async code awaits :meth:`acquire_async` and, when the
    store does I/O (:attr:`remote`), :meth:`release_async`, else calls
    :attr:`give_back`.
    """

    __slots__ = ("_function", "_policy", "acquire", "give_back", "release", "remote")

    def __init__(
        self, policy: _Steps, func: Callable[..., Any], *, keeps: bool | None = None
    ) -> None:
        self._policy = policy
        self._function = function = qualified_name(func)
        store = policy._store  # noqa: SLF001 - its own module
        self.remote = store.remote
        if keeps is None:
            keeps = _abandons(func)
        enter, leave = policy._sync_steps(keeps=keeps)  # noqa: SLF001
        self.acquire: Callable[[], object] = functools.partial(enter, function)
        self.release: Callable[[Any], None] = leave
        self.give_back: Callable[[object], None] = store.give_back

    def keeping(self, func: Callable[..., Any]) -> SlotGate:
        """Return this gate for calls that a thread timeout may abandon.

        Their slot is then kept until the abandoned work returns.
        """
        return SlotGate(self._policy, func, keeps=True)

    async def acquire_async(self) -> object:
        """Take a slot without blocking the loop."""
        return await self._policy._admit_async(self._function)  # noqa: SLF001

    async def release_async(self, token: object) -> None:
        """Give the slot of *token* back without blocking the loop."""
        await self._policy._store.give_back_async(token)  # noqa: SLF001
