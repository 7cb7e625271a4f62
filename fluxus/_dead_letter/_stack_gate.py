"""The dead letter queue as ``fluxus.stack`` runs it: one gate per function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxus._core import qualified_name
from fluxus._gate import CaptureGate

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._capture import _Capture


class LetterGate(CaptureGate):
    """The dead letter queue's gate for one function, as ``fluxus.stack`` runs it."""

    __slots__ = ("_calls", "_function", "_policy", "_redaction")

    def __init__(self, policy: _Capture, func: Callable[..., Any]) -> None:
        self._policy = policy
        self._function = qualified_name(func)
        self._redaction = policy._redaction(func)  # noqa: SLF001 - its own module
        self._calls = policy._counters.calls  # noqa: SLF001

    @property
    def default(self) -> Any:
        """What the call returns when :meth:`capture` says so."""
        return self._policy.default

    def enter(self) -> None:
        """Count the call entering."""
        next(self._calls)

    def capture(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Capture *exc*; return whether the call returns ``default`` instead."""
        policy = self._policy
        captured = policy._capture_sync(  # noqa: SLF001 - its own module
            self._function, self._redaction, args, kwargs, exc
        )
        return captured and not policy.reraise

    async def capture_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Same as :meth:`capture`, without blocking the event loop."""
        policy = self._policy
        captured = await policy._capture_async(  # noqa: SLF001 - its own module
            self._function, self._redaction, args, kwargs, exc
        )
        return captured and not policy.reraise
