"""Resilient Python in a few decorators.

fluxus protects sync and ``async def`` code with policies: :func:`retry`
(over tenacity), :func:`timeout` (asyncio cancellation, worker threads or
signals) and, as they land, circuit breakers, rate limits and dead letter
queues.
"""

from __future__ import annotations

from . import backoff, instrumentation, testing
from ._budget import RetryBudget
from ._core import layers
from ._deadline import remaining
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
    "DeadlineExceeded",
    "FluxusError",
    "LayeringWarning",
    "RateLimitExceeded",
    "Retry",
    "RetryBudget",
    "ThreadsExhausted",
    "Timeout",
    "__version__",
    "backoff",
    "instrumentation",
    "layers",
    "remaining",
    "retry",
    "testing",
    "timeout",
]
