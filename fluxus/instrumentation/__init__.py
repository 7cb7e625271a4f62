"""Events, and the hooks that receive them.

Every decision a policy makes (a retry scheduled, retries exhausted, a call
timed out, ...) is a frozen :class:`Event`. Hooks are plain callables taking
one event; by default a :class:`StructlogHook` logs them to the ``fluxus``
logger::

    fluxus.instrumentation.add_hook(lambda event: print(event))
    fluxus.instrumentation.set_hooks([fluxus.instrumentation.LoggingHook()])

The default hook logs through structlog once the application has configured
it, and through the :mod:`logging` logger ``fluxus`` until then, so nothing
reaches stdout unless the application says so (see :class:`StructlogHook`).
Metrics and traces also watch calls that succeed: the backends
:mod:`fluxus.instrumentation.prometheus` and
:mod:`fluxus.instrumentation.otel` (imported on demand, never by
``import fluxus``) register an :class:`Observer` for that; without one a
successful call costs one attribute check. Every policy counts its own
calls and decisions too: ``policy.stats`` is a :class:`Stats`.
"""

from __future__ import annotations

from fluxus._stats import Stats

from ._events import (
    BulkheadRejected,
    BulkheadStorageRecovered,
    BulkheadStorageUnavailable,
    CircuitRejected,
    CircuitStateChanged,
    CircuitStorageRecovered,
    CircuitStorageUnavailable,
    DeadLettered,
    DeadLetterHandlerFailed,
    Event,
    FallbackUsed,
    HedgeStarted,
    HedgeWon,
    RateLimited,
    RateLimitStorageRecovered,
    RateLimitStorageUnavailable,
    RetriesExhausted,
    RetryScheduled,
    StorageRecovered,
    StorageUnavailable,
    TimedOut,
)
from ._hooks import Hook, add_hook, get_hooks, remove_hook, set_hooks
from ._logging import LoggingHook
from ._observe import Observer, add_observer, remove_observer
from ._structlog import StructlogHook

__all__ = [
    "BulkheadRejected",
    "BulkheadStorageRecovered",
    "BulkheadStorageUnavailable",
    "CircuitRejected",
    "CircuitStateChanged",
    "CircuitStorageRecovered",
    "CircuitStorageUnavailable",
    "DeadLetterHandlerFailed",
    "DeadLettered",
    "Event",
    "FallbackUsed",
    "HedgeStarted",
    "HedgeWon",
    "Hook",
    "LoggingHook",
    "Observer",
    "RateLimitStorageRecovered",
    "RateLimitStorageUnavailable",
    "RateLimited",
    "RetriesExhausted",
    "RetryScheduled",
    "Stats",
    "StorageRecovered",
    "StorageUnavailable",
    "StructlogHook",
    "TimedOut",
    "add_hook",
    "add_observer",
    "get_hooks",
    "remove_hook",
    "remove_observer",
    "set_hooks",
]
