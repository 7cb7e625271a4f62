"""The bridge to pybreaker's listeners: their check, their states, a block."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._circuit import CircuitState

_LISTENER_HOOKS = ("before_call", "success", "failure", "state_change")


def _check_listeners(listeners: object) -> tuple[Any, ...]:
    """Return *listeners* as a tuple of objects with pybreaker's four hooks."""
    if listeners is None:
        return ()
    expected = (
        "listeners must be an iterable of pybreaker.CircuitBreakerListener "
        "(objects with before_call, success, failure and state_change)"
    )
    if not isinstance(listeners, Iterable) or isinstance(listeners, str | bytes):
        msg = f"{expected}, got {listeners!r}"
        raise TypeError(msg)
    items = tuple(listeners)
    for item in items:
        if not all(callable(getattr(item, hook, None)) for hook in _LISTENER_HOOKS):
            msg = f"{expected}, got {item!r} in it"
            raise TypeError(msg)
    return items


class ListenerState:
    """A state as pybreaker's listeners see it: only its ``name`` is read."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ListenerState {self.name!r}>"


_LISTENER_STATES = {state: ListenerState(state.value) for state in CircuitState}


def _block() -> None:
    """Stands for a ``with breaker:`` block in the listeners' ``before_call``."""
