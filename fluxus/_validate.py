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

#: What a duration must be, as messages say it.
SECONDS = "seconds (int, float or timedelta)"


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
        expected = SECONDS
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

    Zero and negative durations get one message: ``"<param> must be finite
    and > 0 seconds, got <value>"``.

    Raises:
        TypeError: If *value* is neither a real number nor a timedelta.
        ValueError: If it is not finite and > 0.
    """
    try:
        seconds = to_seconds(value, param)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        msg = f"{param} must be finite and > 0 seconds, got {value!r}"
        raise ValueError(msg) from None
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
    unit = f" ({what})" if what else ""
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{param} must be an int, got {value!r}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{param} must be >= 1{unit}, got {value}"
        raise ValueError(msg)
    return value


def check_callable(value: object, param: str, *, optional: bool = True) -> None:
    """Raise :class:`TypeError` unless *value* is a callable (or ``None``)."""
    if callable(value) or (optional and value is None):
        return
    expected = "a callable or None" if optional else "a callable"
    msg = f"{param} must be {expected}, got {value!r}"
    raise TypeError(msg)


def non_empty_str(value: object, param: str) -> str:
    """Return *value*, a non-empty string, or raise naming *param*.

    Raises:
        TypeError: If *value* is not a string.
        ValueError: If it is the empty string (the right type, a bad value).
    """
    if not isinstance(value, str):
        msg = f"{param} must be a non-empty string, got {value!r}"
        raise TypeError(msg)
    if not value:
        msg = f"{param} must be a non-empty string, got ''"
        raise ValueError(msg)
    return value


def check_fail_open(
    value: object, param: str = "fail_open", *, local: bool = False
) -> Any:
    """Return *value* if it is ``True`` or ``False`` (or ``"local"`` if *local*).

    Truthy stand-ins (``1``, ``"yes"``) are refused: a typo must not decide
    whether calls pass while the storage is down.

    Raises:
        TypeError: If *value* is neither a bool nor a string.
        ValueError: If it is a string other than ``"local"`` (where allowed).
    """
    if isinstance(value, bool) or (local and value == "local"):
        return value
    expected = "True, False or 'local'" if local else "True or False"
    msg = f"{param} must be {expected}, got {value!r}"
    raise (ValueError if isinstance(value, str) and local else TypeError)(msg)


def not_bare(value: object, param: str, expected: str, usage: str) -> None:
    """Refuse a function where a policy's first setting belongs.

    ``@fluxus.timeout`` written without parentheses calls the factory with
    the decorated function as its first argument; say so, rather than only
    that the function has the wrong type.

    Args:
        value: The first positional argument given.
        param: Its parameter's name.
        expected: What it must be, for the message.
        usage: The decorator as it should be written (``"@fluxus.timeout(5)"``).

    Raises:
        TypeError: If *value* is a function, class or other callable.
    """
    if callable(value):
        msg = f"{param} must be {expected}, got {value!r}: use {usage} with parentheses"
        raise TypeError(msg)


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
