"""Resilient Python in a few decorators.

fluxus protects sync and ``async def`` code with policies: :func:`retry`
(over tenacity) and, as they land, timeouts, circuit breakers, rate limits
and dead letter queues.
"""

from __future__ import annotations

from . import backoff, instrumentation, sinks, testing
from ._budget import RetryBudget
from ._core import layers
from ._dead_letter import DeadLetter, DeadLetterQueue, dead_letter
from ._deadline import remaining
from ._rate_limit import RateLimiter, rate_limit
from ._replay import ReplayResult, replay, replay_async
from ._retry import Retry, retry
from ._version import __version__
from .exceptions import (
    CircuitOpenError,
    DeadlineExceeded,
    FluxusError,
    LayeringWarning,
    RateLimitExceeded,
)

__all__ = [
    "CircuitOpenError",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadlineExceeded",
    "FluxusError",
    "LayeringWarning",
    "RateLimitExceeded",
    "RateLimiter",
    "ReplayResult",
    "Retry",
    "RetryBudget",
    "__version__",
    "backoff",
    "dead_letter",
    "instrumentation",
    "layers",
    "rate_limit",
    "remaining",
    "replay",
    "replay_async",
    "retry",
    "sinks",
    "testing",
]
