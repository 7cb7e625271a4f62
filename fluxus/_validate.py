"""Validation of configuration, once for every policy.

Bad configuration raises when the decorator is built, with one message
shape: the parameter's name, what it must be, and the value it got.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeAlias

#: A duration as the public API accepts it: seconds or a timedelta.
Duration: TypeAlias = float | timedelta


def to_seconds(value: object, param: str, *, allow_none: bool = False) -> float:
    """Return *value* (seconds or a timedelta) as finite, non-negative seconds.

    Raises:
        TypeError: If *value* is neither a real number nor a timedelta.
        ValueError: If it is negative, infinite or NaN.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        expected = "seconds (int, float or timedelta)"
        if allow_none:
            expected += " or None"
        msg = f"{param} must be {expected}, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(seconds) or seconds < 0:
        msg = f"{param} must be finite and >= 0 seconds, got {value!r}"
        raise ValueError(msg)
    return seconds


def positive_seconds(value: object, param: str) -> float:
    """Return *value* as seconds > 0; see :func:`to_seconds`.

    Raises:
        TypeError: If *value* is neither a real number nor a timedelta.
        ValueError: If it is not finite and > 0.
    """
    seconds = to_seconds(value, param)
    if seconds <= 0:
        msg = f"{param} must be > 0 seconds, got {value!r}"
        raise ValueError(msg)
    return seconds


def optional_seconds(value: object, param: str) -> float | None:
    """Return ``None`` for ``None``, else *value* as seconds; see :func:`to_seconds`."""
    if value is None:
        return None
    return to_seconds(value, param, allow_none=True)


def positive_int(value: object, param: str, *, what: str = "") -> int:
    """Return *value*, an int of at least 1, or raise naming *param*.

    Args:
        value: The value given.
        param: The parameter's name, for the message.
        what: What the int counts, for the message (``"tokens"``).

    Raises:
        TypeError: If *value* is not an int (bools are refused too).
        ValueError: If it is below 1.
    """
    return int_at_least(value, param, 1, what=what)


def int_at_least(value: object, param: str, minimum: int, *, what: str = "") -> int:
    """Return *value*, an int of at least *minimum*, or raise naming *param*.

    Raises:
        TypeError: If *value* is not an int (bools are refused too).
        ValueError: If it is below *minimum*.
    """
    unit = f" ({what})" if what else ""
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{param} must be an int, got {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{param} must be >= {minimum}{unit}, got {value}"
        raise ValueError(msg)
    return value


def refuse_async_handler(handler: object, function: str, alternative: str = "") -> None:
    """Raise the :class:`TypeError` for an async *handler* on a sync *function*.

    A sync call cannot await the handler, so the decorator refuses the pair
    when it is applied. *alternative* names what else would do (``" or a
    sink"``).
    """
    msg = (
        f"handler {handler!r} is async (an async handler cannot serve the sync "
        f"function {function}); give it a sync handler{alternative}"
    )
    raise TypeError(msg)


def check_callable(value: object, param: str, *, optional: bool = True) -> None:
    """Raise :class:`TypeError` unless *value* is a callable (or ``None``)."""
    if callable(value) or (optional and value is None):
        return
    expected = "a callable or None" if optional else "a callable"
    msg = f"{param} must be {expected}, got {value!r}"
    raise TypeError(msg)


def non_empty_str(value: object, param: str) -> str:
    """Return *value*, a non-empty string, or raise :class:`TypeError`."""
    if not isinstance(value, str) or not value:
        msg = f"{param} must be a non-empty string, got {value!r}"
        raise TypeError(msg)
    return value


def raise_replacement(
    hook: Callable[[Any], object] | None, error: BaseException, param: str
) -> None:
    """Raise the exception *hook* returns for *error*, ``from`` it.

    Returns when there is no hook or it returns ``None``: the caller then
    raises *error* itself.

    Raises:
        TypeError: If the hook returns something that is not an exception.
    """
    if hook is None:
        return
    replacement = hook(error)
    if replacement is None:
        return
    if not isinstance(replacement, BaseException):
        msg = f"{param} must return an exception or None, got {replacement!r}"
        raise TypeError(msg) from error
    raise replacement from error
