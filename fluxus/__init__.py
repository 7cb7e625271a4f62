"""Resilient Python in a few decorators.

fluxus protects sync and ``async def`` code with policies: :func:`retry`
(over tenacity), :func:`timeout` (asyncio cancellation, worker threads or
signals) and, as they land, circuit breakers, rate limits and dead letter
queues.
"""

from __future__ import annotations

from . import backoff, instrumentation, sinks, testing
from ._budget import RetryBudget
from ._core import layers
from ._dead_letter import DeadLetter, DeadLetterQueue, dead_letter
from ._deadline import remaining
from ._replay import ReplayResult, replay, replay_async
from ._retry import Retry, retry
from ._timeout import Timeout, timeout
from ._version import __version__
from .exceptions import (
    CircuitOpenError,
    DeadlineExceeded,
    FluxusError,
    LayeringWarning,
    RateLimitExceeded,
    ThreadsExhausted,
)

__all__ = [
    "CircuitOpenError",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadlineExceeded",
    "FluxusError",
    "LayeringWarning",
    "RateLimitExceeded",
    "ReplayResult",
    "Retry",
    "RetryBudget",
    "ThreadsExhausted",
    "Timeout",
    "__version__",
    "backoff",
    "dead_letter",
    "instrumentation",
    "layers",
    "remaining",
    "replay",
    "replay_async",
    "retry",
    "sinks",
    "testing",
    "timeout",
]
