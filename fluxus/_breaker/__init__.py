"""``@fluxus.circuit_breaker``: a pure circuit, its stores, and the policy.

- :mod:`._circuit`: the state machine, pure (no clock, no lock, no I/O);
- :mod:`._store`: what a store answers (the ``Storage`` protocol);
- :mod:`._memory` and :mod:`._redis_store`: the circuit in this process or
  shared through Redis (one Lua script per step, see :mod:`._lua`);
- :mod:`._options` and :mod:`._listeners`: the checks made when a breaker is
  built, and the bridge to pybreaker's listeners;
- :mod:`._configured`: the settings and the storage, built on first use;
- :mod:`._steps`: admit, then record one outcome (the decision, shared);
- :mod:`._drivers`, :mod:`._blocks` and :mod:`._stack_gate`: the wrappers
  (sync and async), the ``with`` forms, and the gate ``fluxus.stack`` runs;
- :mod:`._policy`: the class and its factory.
"""

from ._circuit import CircuitState
from ._policy import CircuitBreaker, circuit_breaker
from ._redis_store import CircuitRedisStorage
from ._stack_gate import BreakerGate

__all__ = [
    "BreakerGate",
    "CircuitBreaker",
    "CircuitRedisStorage",
    "CircuitState",
    "circuit_breaker",
]
