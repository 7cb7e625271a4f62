"""What the example apps share: a flaky upstream and a per-client window.

:class:`Window` stands in for ``fluxus.rate_limit`` here. It raises what a
fluxus limiter raises, :class:`fluxus.RateLimitExceeded` with
``retry_after``, so the web integrations answer it with 429 and
``Retry-After``. With ``fluxus.rate_limit`` it becomes
``@fluxus.rate_limit("5/10 seconds", key=client_ip)`` on the view.
"""

from __future__ import annotations

import itertools
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


_calls = itertools.count()


@fluxus.retry(3, on=ConnectionError, backoff=fluxus.backoff.exponential(0.05))
def fetch_quote() -> str:
    """Ask a flaky upstream service: every other call fails."""
    if next(_calls) % 2 == 0:
        msg = "upstream reset the connection"
        raise ConnectionError(msg)
    return "Simple is better than complex."
