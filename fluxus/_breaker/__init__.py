"""``@fluxus.circuit_breaker``: a pure circuit, its stores, and the policy.

- :mod:`._circuit`: the state machine, pure (no clock, no lock, no I/O);
- :mod:`._store`: what a store answers (the ``Storage`` protocol);
- :mod:`._memory` and :mod:`._redis_store`: the circuit in this process or
  shared through Redis (one Lua script per step, see :mod:`._lua`);
- :mod:`._policy`: the decorator, its two drivers and the stack's gate.
"""

from ._circuit import CircuitState
from ._policy import BreakerGate, CircuitBreaker, circuit_breaker
from ._redis_store import CircuitRedisStorage

__all__ = [
    "BreakerGate",
    "CircuitBreaker",
    "CircuitRedisStorage",
    "CircuitState",
    "circuit_breaker",
]
