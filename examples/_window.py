"""A per-client fixed window, standing in for ``fluxus.rate_limit`` here.

It raises what a fluxus limiter raises, :class:`fluxus.RateLimitExceeded`
with ``retry_after``, so the web integrations answer it with 429 and
``Retry-After``. With ``fluxus.rate_limit`` it becomes
``@fluxus.rate_limit("5/10 seconds", key=client_ip)`` on the view.
"""

from __future__ import annotations

import threading
import time

import fluxus


class Window:
    """Admit *limit* calls per key in each window of *per* seconds."""

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one call for *key*, or raise RateLimitExceeded."""
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.per:
                start, count = now, 0
            if count >= self.limit:
                raise fluxus.RateLimitExceeded("example", start + self.per - now)
            self._windows[key] = (start, count + 1)
