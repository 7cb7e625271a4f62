"""``@fluxus.rate_limit``: pure cores, their stores, and the policy.

- :mod:`._gcra`: the token bucket's arithmetic (GCRA), pure;
- :mod:`._memory` and :mod:`._redis_store`: token buckets in this process or
  in Redis (the same arithmetic in one Lua script);
- :mod:`._windows`: string rates counted by limits' window strategies;
- :mod:`._policy`: the decorator, its admission decision and two drivers;
- :mod:`._hold`: the steps of one admission and the waits for a reserved slot;
- :mod:`._names` and :mod:`._options`: storage keys, default names, checks;
- :mod:`._stack_gate`: the limiter as ``fluxus.stack`` runs it.
"""

from ._plan import check_storage
from ._policy import RateLimiter, rate_limit

__all__ = ["RateLimiter", "check_storage", "rate_limit"]
