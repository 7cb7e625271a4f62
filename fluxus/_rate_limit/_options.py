"""The limiter's options checked when it is built: fail_open, cost, timeout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from fluxus._validate import check_fail_open as validate_fail_open

#: ``fail_open="local"``: while the storage is down, count in this process.
LOCAL: Final = "local"
FailOpen = bool | Literal["local"]
Cost = int | Callable[..., int]


def check_fail_open(fail_open: object) -> FailOpen:
    """Return *fail_open* if it is ``True``, ``False`` or ``"local"``."""
    checked: FailOpen = validate_fail_open(fail_open, local=True)
    return checked


def check_cost(cost: object, param: str = "cost") -> Cost:
    """Return *cost* if it is an int >= 1 or a callable."""
    if callable(cost):
        return cost
    if isinstance(cost, bool) or not isinstance(cost, int):
        msg = f"{param} must be an int >= 1 or a callable returning one, got {cost!r}"
        raise TypeError(msg)
    if cost < 1:
        msg = f"{param} must be >= 1 (tokens), got {cost!r}"
        raise ValueError(msg)
    return cost


class _UseDefault:
    """The default of ``acquire(timeout=...)``: the policy's own timeout."""

    def __repr__(self) -> str:
        return "<the policy's timeout>"


_POLICY_TIMEOUT: Final = _UseDefault()
