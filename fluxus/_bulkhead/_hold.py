"""A slot kept by work a thread timeout abandoned, until it returns."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fluxus._core import layers

if TYPE_CHECKING:
    from collections.abc import Callable


class _Hold:
    """One slot held by a call, and by work a thread timeout abandoned.

    Given back when the last holder lets go: the caller when it returns,
    or the abandoned work when it finally does.
    """

    __slots__ = ("_give_back", "_holders", "_lock")

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self._holders = 1
        self._lock = threading.Lock()

    def keep(self) -> Callable[[], None]:
        with self._lock:
            self._holders += 1
        return self.drop

    def drop(self) -> None:
        with self._lock:
            self._holders -= 1
            last = not self._holders
        if last:
            self._give_back()


def _abandons(func: Callable[..., Any]) -> bool:
    """Return whether a thread timeout inside *func*'s layers may abandon it."""
    return any(
        policy._kind == "timeout" and getattr(policy, "strategy", "") == "thread"  # noqa: SLF001
        for policy in layers(func)
    )
