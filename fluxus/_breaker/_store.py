"""What a breaker's storage answers: the steps of one circuit, wherever it lives."""

from __future__ import annotations

from typing import Any, Protocol

from ._circuit import CircuitState, Transition

#: A step's answer: the token (``None``: rejected), the wait, what changed.
Admission = tuple[object | None, float, Transition | None]


class Storage(Protocol):
    """Where one circuit's state lives: in this process or shared."""

    #: Whether the steps do I/O (async functions then use the ``*_async`` steps).
    remote: bool

    def admit(self, function: str) -> Admission: ...
    def succeed(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None: ...
    def fail(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None: ...
    def release(self, token: Any, function: str) -> None: ...
    def state(self) -> CircuitState: ...
    def reset(self) -> Transition | None: ...
    def force_open(self) -> Transition | None: ...
    async def admit_async(self, function: str) -> Admission: ...
    async def succeed_async(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None: ...
    async def fail_async(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None: ...
    async def release_async(self, token: Any, function: str) -> None: ...
