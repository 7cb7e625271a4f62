"""The limiter's options checked when it is built: fail_open, cost, timeout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

#: ``fail_open="local"``: while the storage is down, count in this process.
LOCAL: Final = "local"
FailOpen = bool | Literal["local"]
Cost = int | Callable[..., int]


def check_fail_open(fail_open: object) -> FailOpen:
    """Return *fail_open* if it is ``True``, ``False`` or ``"local"``."""
    if isinstance(fail_open, bool):
        return fail_open
    if fail_open == LOCAL:
        return LOCAL
    msg = f"fail_open must be True, False or 'local', got {fail_open!r}"
    raise ValueError(msg)


def check_cost(cost: object, param: str = "cost") -> Cost:
    """Return *cost* if it is an int >= 1 or a callable."""
    if callable(cost):
        return cost
    if isinstance(cost, bool) or not isinstance(cost, int):
        msg = f"{param} must be an int >= 1 or a callable returning one, got {cost!r}"
        raise TypeError(msg)
    if cost < 1:
        msg = f"{param} must be at least 1 token, got {cost!r}"
        raise ValueError(msg)
    return cost


class _UseDefault:
    """The default of ``acquire(timeout=...)``: the policy's own timeout."""

    def __repr__(self) -> str:
        return "<the policy's timeout>"


_POLICY_TIMEOUT: Final = _UseDefault()
