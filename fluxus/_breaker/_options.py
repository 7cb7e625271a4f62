"""A breaker's options, checked when it is built: settings, exclusions, storage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from fluxus._config import MEMORY
from fluxus._redis import SCHEMES, normalize_url, scheme_of
from fluxus._validate import positive_int, positive_seconds

from ._redis_store import CircuitRedisStorage

Exclude = (
    type[Exception]
    | Callable[[Exception], bool]
    | Iterable[type[Exception] | Callable[[Exception], bool]]
)


def _split_exclude(
    exclude: object,
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[Exception], bool], ...]]:
    if exclude is None:
        items: tuple[object, ...] = ()
    elif isinstance(exclude, type) or callable(exclude):
        items = (exclude,)
    elif isinstance(exclude, Iterable) and not isinstance(exclude, str | bytes):
        items = tuple(exclude)
    else:
        msg = (
            "exclude must be an exception type, a predicate exc -> bool, or an "
            f"iterable of them, got {exclude!r}"
        )
        raise TypeError(msg)
    types: list[type[BaseException]] = []
    predicates: list[Callable[[Exception], bool]] = []
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                msg = f"exclude must hold exception types or predicates, got {item!r}"
                raise TypeError(msg)
            types.append(item)
        elif callable(item):
            predicates.append(item)
        else:
            msg = f"exclude must hold exception types or predicates, got {item!r}"
            raise TypeError(msg)
    return tuple(types), tuple(predicates)


def _given_storage(
    storage: object, *, fail_open: bool
) -> CircuitRedisStorage | str | None:
    """Check ``storage=`` when the breaker is built; ``None``: the default.

    A URL or a client is given the breaker's *fail_open*; a
    :class:`CircuitRedisStorage` keeps its own, and ``fail_open=False`` on
    a breaker whose storage fails open is refused: the pair contradicts
    itself, and silently failing open is the costly reading.

    Raises:
        ValueError: If *fail_open* is ``False`` and *storage* is a
            :class:`CircuitRedisStorage` with ``fail_open=True``.
    """
    if storage is None:
        return None
    if storage == MEMORY:
        return MEMORY
    if isinstance(storage, CircuitRedisStorage):
        if storage.fail_open and not fail_open:
            msg = (
                "fail_open=False contradicts the storage's own fail_open=True, "
                f"got storage={storage!r}; give the CircuitRedisStorage "
                "fail_open=False (the breaker then needs no fail_open)"
            )
            raise ValueError(msg)
        return storage
    return CircuitRedisStorage(storage, fail_open=fail_open, param="storage")


_DEFAULT_REDIS_LOCK = threading.Lock()
#: One Redis storage per default URI and fail mode: the breakers following
#: it share clients.
_DEFAULT_REDIS: dict[tuple[str, bool], CircuitRedisStorage] = {}


def _default_redis(uri: str, *, fail_open: bool = True) -> CircuitRedisStorage:
    """Return the shared Redis storage of the default storage *uri*.

    Breakers that fail open and breakers that fail closed get one each.

    Raises:
        ValueError: If *uri* is neither ``memory://`` nor a Redis URL.
    """
    with _DEFAULT_REDIS_LOCK:
        storage = _DEFAULT_REDIS.get((uri, fail_open))
        if storage is None:
            scheme = scheme_of(uri)
            if scheme not in SCHEMES:
                msg = (
                    "a circuit breaker without storage= keeps its circuit in the "
                    "default storage, which must be 'memory://' or a Redis URL, "
                    f"got {scheme}:// (FLUXUS_STORAGE_URI); give the breaker a "
                    "storage of its own"
                )
                raise ValueError(msg)
            storage = _DEFAULT_REDIS[uri, fail_open] = CircuitRedisStorage(
                normalize_url(uri), fail_open=fail_open, param="the default storage"
            )
        return storage


#: What :meth:`CircuitBreaker.configure` may change.
_CONFIGURABLE = (
    "failure_threshold",
    "reset_timeout",
    "success_threshold",
    "half_open_max_requests",
    "failure_rate",
    "minimum_calls",
    "slow_call_rate",
)


def _rate(value: object, param: str, *, optional: bool) -> float | None:
    """Return *value*, a fraction in (0, 1] (or ``None`` if *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        expected = "a number in (0, 1]" + (" or None" if optional else "")
        msg = f"{param} must be {expected}, got {value!r}"
        raise TypeError(msg)
    if not 0 < value <= 1:
        msg = f"{param} must be > 0 and <= 1, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _settings(
    *,
    failure_threshold: object,
    reset_timeout: object,
    success_threshold: object,
    half_open_max_requests: object,
    failure_rate: object,
    minimum_calls: object,
    slow_call_duration: object,
    slow_call_rate: object,
) -> dict[str, Any]:
    """Check the circuit's settings as the factory takes them; return them.

    Raises:
        TypeError: If one has the wrong type.
        ValueError: If one is out of range, or no rule could open the circuit.
    """
    checked: dict[str, Any] = {
        "failure_threshold": None
        if failure_threshold is None
        else positive_int(failure_threshold, "failure_threshold"),
        "reset_timeout": positive_seconds(reset_timeout, "reset_timeout"),
        "success_threshold": positive_int(success_threshold, "success_threshold"),
        "half_open_max_requests": positive_int(
            half_open_max_requests, "half_open_max_requests"
        ),
        "failure_rate": _rate(failure_rate, "failure_rate", optional=True),
        "minimum_calls": positive_int(minimum_calls, "minimum_calls"),
        "slow_call_duration": None
        if slow_call_duration is None
        else positive_seconds(slow_call_duration, "slow_call_duration"),
        "slow_call_rate": _rate(slow_call_rate, "slow_call_rate", optional=False),
    }
    if (
        checked["failure_threshold"] is None
        and checked["failure_rate"] is None
        and checked["slow_call_duration"] is None
    ):
        msg = (
            "failure_threshold must be an int >= 1 when failure_rate and "
            "slow_call_duration are None (with no rule the circuit would "
            "never open), got None"
        )
        raise ValueError(msg)
    return checked
