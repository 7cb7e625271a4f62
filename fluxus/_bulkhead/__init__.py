"""The bulkhead: a pure decision core, a memory and a Redis store, one policy.

- :mod:`._core`: the slots' decisions, pure;
- :mod:`._store`, :mod:`._memory` and :mod:`._redis`: what a store offers,
  slots in this process, or leases shared through Redis (its scripts in
  :mod:`._lua`, their renewal in :mod:`._leases`);
- :mod:`._steps` and :mod:`._hold`: take a slot or refuse, give it back, and
  keep it for work a thread timeout abandoned;
- :mod:`._drivers`, :mod:`._blocks` and :mod:`._stack_gate`: the wrappers
  (sync and async), the ``with`` forms, and the gate ``fluxus.stack`` runs;
- :mod:`._policy`: the class and its factory.
"""

from __future__ import annotations

from ._policy import Bulkhead, bulkhead

__all__ = ["Bulkhead", "bulkhead"]
