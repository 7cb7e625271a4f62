"""Resilient Python in a few decorators.

fluxus protects sync and ``async def`` code with policies: :func:`retry`
(over tenacity), :func:`timeout` (asyncio or trio cancellation, worker
threads or signals), :func:`circuit_breaker` (over pybreaker), :func:`rate_limit` (over
limits), :func:`bulkhead` (concurrency), :func:`hedge` (backup calls),
:func:`fallback` and :func:`dead_letter` (durable sinks), applied in the
recommended order by :func:`stack`.
"""

from __future__ import annotations

from . import backoff, instrumentation, sinks, testing
from ._breaker import CircuitBreaker, CircuitRedisStorage, CircuitState, circuit_breaker
from ._budget import RetryBudget
from ._bulkhead import Bulkhead, bulkhead
from ._core import layers
from ._dead_letter import DeadLetter, DeadLetterQueue, dead_letter
from ._deadline import remaining
from ._fallback import Fallback, fallback
from ._hedge import Hedge, hedge
from ._rate_limit import RateLimiter, rate_limit
from ._replay import ReplayResult, replay, replay_async
from ._retry import Retry, retry
from ._stack import Stack, stack
from ._timeout import Timeout, timeout
from ._version import __version__
from .exceptions import (
    BulkheadFull,
    CircuitOpenError,
    DeadlineExceeded,
    FluxusError,
    LayeringWarning,
    RateLimitExceeded,
    ThreadsExhausted,
    TransactionWarning,
    is_rejection,
)

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitRedisStorage",
    "CircuitState",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadlineExceeded",
    "Fallback",
    "FluxusError",
    "Hedge",
    "LayeringWarning",
    "RateLimitExceeded",
    "RateLimiter",
    "ReplayResult",
    "Retry",
    "RetryBudget",
    "Stack",
    "ThreadsExhausted",
    "Timeout",
    "TransactionWarning",
    "__version__",
    "backoff",
    "bulkhead",
    "circuit_breaker",
    "dead_letter",
    "fallback",
    "hedge",
    "instrumentation",
    "is_rejection",
    "layers",
    "rate_limit",
    "remaining",
    "replay",
    "replay_async",
    "retry",
    "sinks",
    "stack",
    "testing",
    "timeout",
]
