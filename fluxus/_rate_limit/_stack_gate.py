"""The limiter as ``fluxus.stack`` runs it: one gate per function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxus._gate import AdmitGate

if TYPE_CHECKING:
    from ._policy import RateLimiter


class RateLimitGate(AdmitGate):
    """The limiter's gate for one function, as ``fluxus.stack`` runs it."""

    __slots__ = ("_call_key", "_function", "_limiter")

    def __init__(self, limiter: RateLimiter, function: str) -> None:
        self._limiter = limiter
        self._function = function
        has_key = limiter._key is not None  # noqa: SLF001 - its own package
        self._call_key = limiter._call_key if has_key else None  # noqa: SLF001

    def admit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Return once the call holds a permit, or raise RateLimitExceeded."""
        limiter, call_key = self._limiter, self._call_key
        limiter._admit(  # noqa: SLF001 - its own package
            call_key(args, kwargs) if call_key else "",
            limiter.timeout,
            self._function,
            limiter._call_cost(args, kwargs),  # noqa: SLF001
        )

    async def admit_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Same as :meth:`admit`, without blocking the event loop."""
        limiter, call_key = self._limiter, self._call_key
        await limiter._admit_async(  # noqa: SLF001 - its own package
            call_key(args, kwargs) if call_key else "",
            limiter.timeout,
            self._function,
            limiter._call_cost(args, kwargs),  # noqa: SLF001
        )
