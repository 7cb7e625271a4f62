"""A rate limiter's configuration: limits parsed, checked and planned.

One immutable :class:`_Plan` holds the limit, the algorithm and the store
it is counted in; the stores themselves are shared per process
(:func:`_shared_store`): same name, same budget.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import limits
import limits.storage
import limits.util

from fluxus._extras import require
from fluxus._redis import mask_password, scheme_of
from fluxus._validate import positive_int

from ._gcra import Bucket

#: limits' Redis schemes (``redis+unix`` is its spelling of ``unix``).
REDIS_SCHEMES = frozenset(
    {"redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel"}
)
TOKEN_BUCKET_SCHEMES = frozenset({"memory", *REDIS_SCHEMES})

TOKEN_BUCKET = "token-bucket"  # noqa: S105 - a strategy, not a password
WINDOW_STRATEGIES = ("sliding-window-counter", "fixed-window", "moving-window")
STRATEGIES = (TOKEN_BUCKET, *WINDOW_STRATEGIES)
DEFAULT_STRING_STRATEGY = "fixed-window"
DEFAULT_KEY_PREFIX = "fluxus:ratelimit"

Limit = float | int | str

_STORES_LOCK = threading.Lock()
_STORES: dict[tuple[str, ...], Any] = {}


def _shared_store(ident: tuple[str, ...], make: Callable[[], Any]) -> Any:
    """Return the process-wide store for *ident*: same name, same budget."""
    with _STORES_LOCK:
        store = _STORES.get(ident)
        if store is None:
            store = _STORES[ident] = make()
        return store


def _forget_stores() -> None:  # pragma: no cover - forked children only
    """Start a forked child without its parent's stores, clients and locks."""
    global _STORES_LOCK  # noqa: PLW0603 - the parent's may be held forever
    _STORES_LOCK = threading.Lock()
    _STORES.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_forget_stores)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One consistent configuration: limit, algorithm and where it is counted."""

    limit: Limit
    burst: int | None
    strategy: str
    buckets: tuple[Bucket, ...] = ()
    items: tuple[limits.RateLimitItem, ...] = ()
    store: Any = field(default=None, compare=False)
    #: The store does I/O: the async driver awaits its ``*_async`` methods.
    io: bool = False
    #: The burst was given, not derived from the rate: a new rate keeps it.
    explicit_burst: bool = False

    @property
    def spec(self) -> tuple[Any, ...]:
        return self.buckets or self.items


def _parse_limit(limit: object) -> tuple[float | None, list[limits.RateLimitItem]]:
    """Return ``(rate, [])`` for a number or ``(None, items)`` for a string."""
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        if not math.isfinite(limit) or limit <= 0:
            msg = (
                f"limit must be a finite number of calls per second > 0, got {limit!r}"
            )
            raise ValueError(msg)
        return float(limit), []
    if not isinstance(limit, str):
        msg = (
            "limit must be a rate string such as '10/second' or a number of "
            f"calls per second, got {limit!r}"
        )
        raise TypeError(msg)
    try:
        items = limits.util.parse_many(limit)
    except ValueError:
        msg = (
            f"limit must be a rate in limits' notation such as '10/second' or "
            f"'100 per minute; 10 per second', got {limit!r}"
        )
        raise ValueError(msg) from None
    for item in items:
        if item.amount < 1:
            msg = f"limit must allow at least 1 call per period, got {limit!r}"
            raise ValueError(msg)
    return None, items


def _check_burst(burst: object) -> int | None:
    return None if burst is None else positive_int(burst, "burst", what="tokens")


def _limits_schemes() -> frozenset[str]:
    """Return the (sync) storage schemes limits' public storage classes declare."""
    schemes: set[str] = set()
    for name in limits.storage.__all__:
        declared = getattr(getattr(limits.storage, name), "STORAGE_SCHEME", None)
        if declared:
            schemes.update([declared] if isinstance(declared, str) else declared)
    return frozenset(schemes)


_LIMITS_SCHEMES = _limits_schemes()


def check_storage(storage: object, param: str = "storage") -> str:
    """Return *storage* if it is a limits storage URI fluxus can use.

    Raises:
        TypeError: If *storage* is not a string.
        ValueError: If its scheme is unknown.
        ImportError: If it is a Redis URL and redis is not installed (the
            message names the extra).
    """
    if not isinstance(storage, str):
        msg = (
            f"{param} must be a limits storage URI such as 'memory://', got {storage!r}"
        )
        raise TypeError(msg)
    scheme = scheme_of(storage)
    if scheme not in _LIMITS_SCHEMES:
        known = ", ".join(sorted(_LIMITS_SCHEMES))
        msg = (
            f"{param} must be a storage URI with a scheme limits knows ({known}; "
            "async functions use the async storages on their own), got "
            f"{mask_password(storage)!r}"
        )
        raise ValueError(msg)
    if scheme in REDIS_SCHEMES:
        what = (
            "a Redis rate limit storage"
            if param == "storage"
            else f"{param} {mask_password(storage)!r}"
        )
        require("redis", "redis", what)
    return storage
