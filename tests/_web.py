"""Helpers shared by the fluxus.contrib tests: a counter rule and a client."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import fluxus


class Counter:
    """Admit the first *limit* calls, then reject each with *retry_after*.

    A stand-in for a rate limiter: the views raise what a limiter raises.
    """

    def __init__(self, limit: int, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.calls = 0
        self._lock = threading.Lock()

    def admit(self) -> None:
        with self._lock:
            self.calls += 1
            admitted = self.calls <= self.limit
        if not admitted:
            raise fluxus.RateLimitExceeded("counter", self.retry_after)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET *url*; return the status, the Retry-After header ('' if none), the body."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return (
                response.status,
                response.headers.get("Retry-After", ""),
                response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Retry-After", ""), error.read()


def hammer(url: str, requests: int) -> list[tuple[int, str, bytes]]:
    """Send *requests* GETs to *url* at once, one thread each."""
    go = threading.Event()

    def one(_: int) -> tuple[int, str, bytes]:
        go.wait(timeout=5)
        return fetch(url)

    with ThreadPoolExecutor(requests) as pool:
        results = pool.map(one, range(requests))
        go.set()
        return list(results)


class Flaky(dict[str, int]):
    """Failures left per kind: ``flaky(kind)`` raises while some are left.

    Each call of a kind with failures left uses one up and raises
    ``ConnectionError``; otherwise it returns the kind.
    """

    def __call__(self, kind: str) -> str:
        if self.get(kind, 0):
            self[kind] -= 1
            raise ConnectionError(kind)
        return kind
