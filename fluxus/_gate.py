"""The gate protocol: what :func:`fluxus.stack` needs of a policy.

A gate is one policy's steps around the calls of one function: the rate
limiter *admits* (or raises), the bulkhead *acquires* a slot and
*releases* it, the breaker *admits* and then records that the call
*succeeded* or *failed*, the dead letter queue *captures* what escaped and
the fallback *answers* it. The stack runs every gate in one wrapper, in the recommended
order; a policy hands out its gate through :func:`fluxus._core.gate_of`,
so the stack touches no private member of another module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class AdmitGate(Protocol):
    """A gate that only admits: the rate limiter."""

    def admit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Return once the call may run, or raise the policy's rejection."""

    async def admit_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Same as :meth:`admit`, awaiting a storage that does I/O."""


class AroundGate(Protocol):
    """A gate that admits, then records the outcome: the circuit breaker."""

    def admit(self) -> object:
        """Admit the call and return its token, or raise the rejection."""

    def succeed(self, token: object) -> None:
        """Record that the admitted call succeeded."""

    def fail(self, token: object, exc: BaseException) -> None:
        """Record that the admitted call raised *exc*."""

    async def run_async(
        self,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Await *func* between the admission and the outcome."""


class CaptureGate(Protocol):
    """A gate that captures what escaped: the dead letter queue."""

    @property
    def default(self) -> Any:
        """What the call returns when :meth:`capture` says so."""

    def enter(self) -> None:
        """Count the call entering."""

    def capture(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Capture *exc*; return whether the call returns ``default`` instead."""

    async def capture_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Same as :meth:`capture`, without blocking the event loop."""


class SlotGate(Protocol):
    """A gate that holds a slot around the call: the bulkhead.

    Attributes:
        remote: Whether the slots live in a storage that does I/O (the async
            path then awaits :meth:`release_async`, else calls
            :meth:`give_back`).
    """

    remote: bool

    def acquire(self) -> object:
        """Take a slot and return what :meth:`release` gives back, or raise."""

    def release(self, held: object) -> None:
        """Give back what :meth:`acquire` returned."""

    def give_back(self, token: object) -> None:
        """Give back the slot :meth:`acquire_async` returned (no I/O)."""

    def keeping(self, func: Callable[..., Any]) -> SlotGate:
        """Return the gate for calls a thread timeout may abandon."""

    async def acquire_async(self) -> object:
        """Take a slot without blocking the loop, or raise."""

    async def release_async(self, token: object) -> None:
        """Give the slot back without blocking the loop."""


class AnswerGate(Protocol):
    """A gate that answers what escaped: the fallback.

    Attributes:
        on: The exception types it answers.
    """

    on: tuple[type[Exception], ...]

    def enter(self) -> None:
        """Count the call entering."""

    def answer(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """Return the answer to *exc*, or re-raise it."""

    async def answer_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """Same as :meth:`answer`, awaiting an async handler."""
