"""Events, and the hooks that receive them.

Every decision a policy makes (a retry scheduled, retries exhausted, a call
timed out, ...) is a frozen :class:`Event`. Hooks are plain callables taking
one event; by default a :class:`StructlogHook` logs them to the ``fluxus``
logger::

    fluxus.instrumentation.add_hook(lambda event: print(event))
    fluxus.instrumentation.set_hooks([fluxus.instrumentation.LoggingHook()])
"""

from __future__ import annotations

from ._events import (
    CircuitRejected,
    CircuitStateChanged,
    CircuitStorageRecovered,
    CircuitStorageUnavailable,
    DeadLettered,
    DeadLetterHandlerFailed,
    Event,
    RateLimited,
    RateLimitStorageRecovered,
    RateLimitStorageUnavailable,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)
from ._hooks import Hook, add_hook, get_hooks, remove_hook, set_hooks
from ._logging import LoggingHook
from ._structlog import StructlogHook

__all__ = [
    "CircuitRejected",
    "CircuitStateChanged",
    "CircuitStorageRecovered",
    "CircuitStorageUnavailable",
    "DeadLetterHandlerFailed",
    "DeadLettered",
    "Event",
    "Hook",
    "LoggingHook",
    "RateLimitStorageRecovered",
    "RateLimitStorageUnavailable",
    "RateLimited",
    "RetriesExhausted",
    "RetryScheduled",
    "StructlogHook",
    "TimedOut",
    "add_hook",
    "get_hooks",
    "remove_hook",
    "set_hooks",
]
